""" What the OpenAPI and the AsyncAPI documents share: a service's SimpleIO as JSON Schema (its
declared types, and Zato's name-based typing for elements given as plain names), its docstring
as a summary and a description, the tags and examples it declares, and the filters by service
name pattern and by tag.

A service declares tags and examples with class attributes (this project's spelling):

```python
class GetUser(Service):
    \""" Returns a user by id.

    Looks the user up in the CRM first, then in the archive.
    \"""
    api_tags = ["users"]                     # or a string: "users, crm"
    api_examples = {"request": {"user_id": 123}, "response": {"user_id": 123, "name": "Ann"}}
```

Zato 3.2's apispec spelling is read too: docstring sections opened by a `@tag` line (the lines
before the first such line are Zato's implicit `public` section). A section tagged `@internal`,
`@private`, `@confidential`, `@classified`, `@restricted` or `@secret` is left out of the
description, and its tag out of the tags; every other explicit section's tag is a tag. The
docstring of the SimpleIO class describes elements as Zato's does, one `* name - text` line per
element (continued on indented lines), each text becoming that element's `description`.
"""

from __future__ import annotations

import inspect
from fnmatch import fnmatchcase
from typing import Any, Iterable

from zato.server.service import (
    AsIs, Bool, Date, DateTime, Decimal, Dict, Float, Int, List, SIOElem, Text, UUID,
)
from zato.server.service.simpleio import compile_sio

__all__ = [
    "INTERNAL_TAGS", "element_schema", "has_tags", "matches", "open_schema", "schema_of_simpleio",
    "service_description", "simpleio_fields", "split_patterns",
]

# Zato's docstring tags whose sections are not for the public (zato.server.apispec.parser.docstring)
INTERNAL_TAGS = ("classified", "confidential", "internal", "private", "restricted", "secret")
DIRECTIONS = ("input", "output")


# ################################################################################################
# SimpleIO -> JSON Schema


_VALUE_SCHEMAS: dict[type, dict[str, Any]] = {
    Bool: {"type": "boolean"}, Int: {"type": "integer"}, Float: {"type": "number"},
    DateTime: {"type": "string", "format": "date-time"}, Date: {"type": "string", "format": "date"},
    UUID: {"type": "string", "format": "uuid"}, Dict: {"type": "object"}, List: {"type": "array"},
    Text: {"type": "string"}, AsIs: {},
}


def _type_schema(elem: SIOElem, direction: str) -> dict[str, Any]:
    """ The JSON Schema of one element's value (without null): what the server accepts on input
    and what it returns on output (zato.server.service.simpleio: INPUT and OUTPUT). """
    for cls in type(elem).__mro__:
        if cls is Decimal:
            # input: a number or its text; output: always its text (str(Decimal))
            return {"type": "string", "format": "decimal"} if direction == "output" else \
                {"type": ["string", "number"], "format": "decimal"}
        if cls in _VALUE_SCHEMAS:
            return dict(_VALUE_SCHEMAS[cls])
    return {}
    return {}


def element_schema(elem: SIOElem, direction: str, *, required: bool = True, description: str = "") -> dict[str, Any]:
    """ One SimpleIO element's JSON Schema. Output values may be null (a service may return None
    for any element); optional input may be sent as null. """
    schema = _type_schema(elem, direction)
    nullable = direction == "output" or not required
    if nullable and "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema = {**schema, "type": [*types, "null"]}
    if elem.default is not None and isinstance(elem.default, (str, int, float, bool, list, dict)):
        schema["default"] = elem.default
    schema["x-zato-sio-type"] = elem.type_name
    if description:
        schema["description"] = description
    return schema


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction is 'input' or 'output', not {direction!r}")


def simpleio_fields(service_class: type, direction: str) -> list[tuple[str, bool, dict[str, Any]]] | None:
    """ [(name, required, schema)] of a service's SimpleIO `direction` ("input" or "output"), in
    the order declared (required ones first), or None when the service has no SimpleIO. """
    _check_direction(direction)
    sio = compile_sio(service_class)
    if sio is None:
        return None
    descriptions = _sio_descriptions(getattr(service_class, "SimpleIO", None), direction)
    required_elems = sio.input_required if direction == "input" else sio.output_required
    optional_elems = sio.input_optional if direction == "input" else sio.output_optional
    fields = []
    for elems, required in ((required_elems, True), (optional_elems, False)):
        for elem in elems:
            fields.append((elem.name, required, element_schema(elem, direction, required=required,
                                                               description=descriptions.get(elem.name, ""))))
    return fields


def schema_of_simpleio(service_class: type, direction: str) -> dict[str, Any] | None:
    """ The JSON Schema of one object of a service's SimpleIO input or output (`direction`), or
    None when the service has no SimpleIO (the caller then uses `open_schema()` and says so).

    Input: the declared elements, required ones in `required`; other keys are allowed (the
    server ignores them). Output: only the declared elements (the server drops the others),
    each of which may be null; a required one is always present. A service whose SimpleIO
    declares no elements of that direction gets an object schema without properties. """
    fields = simpleio_fields(service_class, direction)
    if fields is None:
        return None
    schema: dict[str, Any] = {"type": "object", "properties": {name: s for name, _, s in fields}}
    required = [name for name, is_required, _ in fields if is_required]
    if required:
        schema["required"] = required
    schema["additionalProperties"] = direction == "input" or not fields
    return schema


def open_schema(note: str = "") -> dict[str, Any]:
    """ The schema of a body a service without SimpleIO takes or returns: anything. """
    schema: dict[str, Any] = {}
    if note:
        schema["description"] = note
    return schema


def _sio_descriptions(declaration: Any, direction: str) -> dict[str, str]:
    """ Zato's SimpleIO docstring: `* name - text` lines, continued on indented lines. With one
    blank line, or a `/` line, between two groups, the first describes input and the second
    output; otherwise the lines describe both. """
    doc = inspect.getdoc(declaration) if declaration is not None and declaration.__doc__ else ""
    if not doc:
        return {}
    lines = doc.splitlines()
    groups: list[list[str]] = [[]]
    for line in lines:
        if line.strip() in ("", "/"):
            if groups[-1]:
                groups.append([])
            continue
        groups[-1].append(line)
    groups = [group for group in groups if group]
    if len(groups) == 2:
        chosen = groups[0] if direction == "input" else groups[1]
    else:
        chosen = [line for group in groups for line in group]
    out: dict[str, str] = {}
    current = None
    for line in chosen:
        stripped = line.strip()
        if stripped.startswith("* "):
            name, _, text = stripped[2:].strip().partition(" ")
            text = text.strip()
            if text.startswith("-"):
                text = text[1:].strip()
            current = name
            out[name] = text
        elif current is not None:
            out[current] = f"{out[current]} {stripped}".strip()
    return out


# ################################################################################################
# Docstrings, tags and examples


def _docstring_sections(doc: str) -> list[tuple[str, list[str]]]:
    """ (tag, lines) for each section of a docstring in Zato's spelling; "public" before any `@tag`. """
    sections: list[tuple[str, list[str]]] = [("public", [])]
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith("@") and len(stripped) > 1 and " " not in stripped:
            sections.append((stripped[1:], []))
            continue
        sections[-1][1].append(line)
    return [(tag, lines) for tag, lines in sections if tag != "public" or any(line.strip() for line in lines)]


def _is_internal(tag: str) -> bool:
    return any(name in tag.lower() for name in INTERNAL_TAGS)


def _split_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [str(item).strip() for item in value if str(item).strip()]


def service_description(service_class: type) -> dict[str, Any]:
    """ {"summary", "description", "tags", "examples"} of a service: the docstring's first
    paragraph (joined into one line) is the summary and the rest the description (Zato's internal
    sections left out); tags from `api_tags` and Zato's `@tag` docstring sections (in that order,
    each once); examples from `api_examples` ({"request": ..., "response": ...}, either optional). """
    doc = inspect.cleandoc(service_class.__dict__.get("__doc__") or "")
    summary_parts: list[str] = []
    description_parts: list[str] = []
    tags = _split_tags(getattr(service_class, "api_tags", None))
    for tag, lines in _docstring_sections(doc):
        if _is_internal(tag):
            continue
        if tag != "public" and tag not in tags:
            tags.append(tag)
        text = "\n".join(lines).strip()
        if not text:
            continue
        paragraphs = text.split("\n\n", 1)
        if not summary_parts:
            summary_parts.append(" ".join(part.strip() for part in paragraphs[0].splitlines()))
            if len(paragraphs) > 1 and paragraphs[1].strip():
                description_parts.append(paragraphs[1].strip())
        else:
            description_parts.append(text)
    examples: dict[str, Any] = {}
    declared = getattr(service_class, "api_examples", None)
    if isinstance(declared, dict):
        for key in ("request", "response"):
            if key in declared:
                examples[key] = declared[key]
    summary = summary_parts[0] if summary_parts else ""
    return {"summary": summary, "description": "\n\n".join(description_parts), "tags": tags,
            "examples": examples}


# ################################################################################################
# Filters


def split_patterns(values: Iterable[str] | str | None) -> list[str] | None:
    """ Patterns given repeatedly and/or comma-separated, as one list (None when none given). """
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = [part.strip() for value in values for part in str(value).split(",") if part.strip()]
    return out or None


def matches(name: str, include: list[str] | None, exclude: list[str] | None) -> bool:
    """ Whether a service `name` is described: it matches one of `include` (fnmatch patterns, case
    sensitive; everything when None or empty) and none of `exclude`. """
    if include and not any(fnmatchcase(name, pattern) for pattern in include):
        return False
    return not (exclude and any(fnmatchcase(name, pattern) for pattern in exclude))


def has_tags(service_tags: Iterable[str], tags: list[str] | None) -> bool:
    """ Whether something tagged `service_tags` passes a filter by `tags` (any of them; everything
    when None or empty). `public`, Zato's implicit tag of every docstring (and the default of its
    `zato apispec --tags`), passes everything. """
    return not tags or "public" in tags or bool(set(service_tags) & set(tags))
