""" SimpleIO: a service's declared input and output.

```python
class GetUser(Service):
    class SimpleIO:
        input_required = 'user_id', Text('name')
        input_optional = Int('limit', default=10), 'is_active'
        output_required = 'user_id', 'name'
        output_optional = DateTime('last_seen'),
```

Input comes from path parameters, then the query string, then the body (a JSON object or a
form), later sources winning. Each element is converted to its type; elements given as plain
strings take their type from their name as in Zato (`is_`/`has_`... prefixes are Bool,
`id` and `_id`/`_count`/`_size`/`_timeout` suffixes are Int, everything else Text). All bad
fields are reported at once (`InputError.errors`). Output is checked the same way: required
elements must be present, values are converted to JSON-friendly types, and only declared
elements are returned.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any, Iterable

from zato.config import Bunch, to_bool as _to_bool, to_float as _to_float, to_int as _to_int
from zato.server.service import (
    AsIs, Bool, Date, DateTime, Decimal, DeferredPayload, Dict, Float, Int, List, SIOElem, Text, UUID,
)

BOOL_PREFIXES = ("by_", "has_", "is_", "may_", "needs_", "should_")
INT_EXACT = ("id",)
INT_SUFFIXES = ("_count", "_id", "_size", "_timeout")

MISSING = object()


class SIOError(Exception):
    """ Input or output does not match a service's SimpleIO declaration. """

    def __init__(self, kind: str, errors: list[dict[str, str]]) -> None:
        self.kind = kind
        self.errors = errors
        listed = "; ".join(f"{e['name']}: {e['error']}" for e in errors)
        super().__init__(f"invalid {kind}: {listed}")


class InputError(SIOError):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("input", errors)


class OutputError(SIOError):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("output", errors)


def _element(item: Any) -> SIOElem:
    if isinstance(item, SIOElem):
        return item
    if not isinstance(item, str):
        raise TypeError(f"a SimpleIO element must be a name or a type such as Int('x'), not {item!r}")
    if item.startswith(BOOL_PREFIXES):
        return Bool(item)
    if item in INT_EXACT or item.endswith(INT_SUFFIXES):
        return Int(item)
    return Text(item)


def _elements(value: Any) -> tuple[SIOElem, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, SIOElem)):
        value = (value,)
    return tuple(_element(item) for item in value)


# ################################################################################################
# Conversions: input (from JSON, query strings, forms) and output (to JSON)


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, bool):
        raise ValueError("expected a decimal number, got a boolean")
    try:
        return decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        raise ValueError(f"expected a decimal number, got {value!r}") from None


def _to_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"expected a date as YYYY-MM-DD, got {value!r}") from None


def _to_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    text = str(value)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 date and time, got {value!r}") from None


def _to_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValueError(f"expected a UUID, got {value!r}") from None


def _to_text(value: Any) -> str | bytes:
    """ Text: numbers become their text; bytes (a binary upload) stay bytes, never their repr. """
    if isinstance(value, (dict, list)):
        raise ValueError(f"expected text, got a {type(value).__name__}")
    return value if isinstance(value, (str, bytes)) else str(value)


def _to_dict(value: Any) -> Bunch:
    if not isinstance(value, dict):
        raise ValueError(f"expected an object, got {type(value).__name__}")
    return Bunch(value)


def _to_list(value: Any) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    raise ValueError(f"expected a list, got {type(value).__name__}")


INPUT = {
    AsIs: lambda value: value, Bool: _to_bool, Int: _to_int, Float: _to_float, Decimal: _to_decimal,
    Date: _to_date, DateTime: _to_datetime, Dict: _to_dict, List: _to_list, Text: _to_text, UUID: _to_uuid,
}


def _json_value(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    return value


OUTPUT = {
    AsIs: lambda value: value, Bool: _to_bool, Int: _to_int, Float: _to_float,
    Decimal: lambda value: str(_to_decimal(value)), Date: lambda value: _to_date(value).isoformat(),
    DateTime: lambda value: _to_datetime(value).isoformat(), Dict: _to_dict, List: _to_list, Text: _to_text,
    UUID: lambda value: str(_to_uuid(value)),
}


def _converter(table: dict, elem: SIOElem):
    for cls in type(elem).__mro__:
        if cls in table:
            return table[cls]
    return table[AsIs]


# ################################################################################################


class SIODefinition:
    """ A service's SimpleIO, compiled once per class. """

    def __init__(self, declaration: type) -> None:
        self.input_required = _elements(getattr(declaration, "input_required", None))
        self.input_optional = _elements(getattr(declaration, "input_optional", None))
        self.output_required = _elements(getattr(declaration, "output_required", None))
        self.output_optional = _elements(getattr(declaration, "output_optional", None))
        self.default_value = getattr(declaration, "default_value", None)
        self.default_input_value = getattr(declaration, "default_input_value", self.default_value)
        self.has_output = bool(self.output_required or self.output_optional)
        self._input = [(e, True, _converter(INPUT, e)) for e in self.input_required] + \
                      [(e, False, _converter(INPUT, e)) for e in self.input_optional]
        self._output = [(e, True, _converter(OUTPUT, e)) for e in self.output_required] + \
                       [(e, False, _converter(OUTPUT, e)) for e in self.output_optional]

    def parse_input(self, sources: Iterable[Any]) -> Bunch:
        """ Typed input from `sources` (dicts; later ones win); raises `InputError` listing every bad field.
        A `DeferredPayload` (a body not parsed yet) is parsed here, and only if there is input to read. """
        if not self._input:
            return Bunch()
        merged: dict[str, Any] = {}
        for source in sources:
            if type(source) is DeferredPayload:
                source = source.value()
            if isinstance(source, dict):
                merged.update(source)
        result = Bunch()
        errors = []
        for elem, required, convert in self._input:
            value = merged.get(elem.name, MISSING)
            if value is MISSING or (value is None and required) or (value == "" and required and not
                                                                     isinstance(elem, (Text, AsIs))):
                if required:
                    errors.append({"name": elem.name, "error": "missing (it is required)"})
                else:
                    result[elem.name] = elem.default if elem.default is not None else self.default_input_value
                continue
            if value is None:
                result[elem.name] = None
                continue
            try:
                result[elem.name] = convert(value)
            except ValueError as exc:
                errors.append({"name": elem.name, "error": str(exc)})
        if errors:
            raise InputError(errors)
        return result

    def check_output(self, payload: Any) -> Any:
        """ Checks and converts a response payload (a dict, an object with attributes, or a list of
        them); returns it with only declared elements. Raises `OutputError`. """
        if not self.has_output or payload is None or payload == "" or isinstance(payload, (str, bytes)):
            return payload
        if isinstance(payload, (list, tuple)):
            errors: list[dict[str, str]] = []
            items = []
            for index, item in enumerate(payload):
                try:
                    items.append(self._check_one(item))
                except OutputError as exc:
                    errors.extend({"name": f"[{index}].{e['name']}", "error": e["error"]} for e in exc.errors)
            if errors:
                raise OutputError(errors)
            return items
        return self._check_one(payload)

    def _check_one(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            item = {key: value for key, value in vars(item).items() if not key.startswith("_")} \
                if hasattr(item, "__dict__") else {}
        result: dict[str, Any] = {}
        errors = []
        for elem, required, convert in self._output:
            value = item.get(elem.name, MISSING)
            if value is MISSING or value is None:
                if required and value is MISSING:
                    errors.append({"name": elem.name, "error": "missing (it is required)"})
                elif value is None or elem.default is not None or self.default_value is not None:
                    result[elem.name] = elem.default if value is MISSING and elem.default is not None else \
                        (None if value is None else self.default_value)
                continue
            try:
                result[elem.name] = _json_value(convert(value))
            except ValueError as exc:
                errors.append({"name": elem.name, "error": str(exc)})
        if errors:
            raise OutputError(errors)
        return result


def compile_sio(service_class: type) -> SIODefinition | None:
    declaration = getattr(service_class, "SimpleIO", None)
    return SIODefinition(declaration) if declaration is not None else None
