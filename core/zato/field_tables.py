""" Markdown tables of an object type's fields, generated from its schema, so that READMEs and
docs cannot disagree with the code.

A document marks where a table goes; everything between the two markers is generated:

    <!-- fields:email_smtp start -->
    <!-- fields:email_smtp end -->

`scripts/field_tables` (or `python -m zato.field_tables`) rewrites every marked region of the
repository's README.md, docs/*.md and plugins/*/README.md, or of the files it is given;
`--check` only says which differ. tests/test_field_tables.py runs the check. The object types
are those of every installed plugin (`load_plugins`), so a plugin's README can be checked too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from zato.registry import Field, ObjectType

REGENERATE = "scripts/field_tables"

# A marker is a line of its own (one quoted in a sentence or a code span is text, not a marker).
REGION = re.compile(r"^<!-- fields:(?P<type>[A-Za-z0-9_]+) start -->\n(?P<body>.*?)^<!-- fields:(?P=type) end -->$",
                    re.DOTALL | re.MULTILINE)
START = re.compile(r"^<!-- fields:(?P<type>[A-Za-z0-9_]+) (?P<end>start|end) -->$", re.MULTILINE)

COLUMNS = ("field", "type", "required", "default", "allowed", "description")


class FieldTableError(Exception):
    """ A marked region that cannot be generated: an unknown object type or an unclosed marker. """


# ################################################################################################
# One table


def field_table(object_type: ObjectType) -> str:
    """ The Markdown table of `object_type`'s fields, one row per field, in the schema's order. """
    lines = [f"<!-- generated from the {object_type.name} schema by {REGENERATE}: edit the fields' descriptions "
             f"in the code, not here -->",
             "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for item in object_type.fields:
        cells = (f"`{item.name}`", _type(item), "yes" if item.required else "no", _default(item), _allowed(item),
                 _description(item))
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _type(item: Field) -> str:
    kind = f"list of {item.item_type}" if item.type == "list" and item.item_type else item.type
    return f"{kind}, secret" if item.secret else kind


def _value(value: Any) -> str:
    if isinstance(value, str):
        if "\n" in value:
            return "<br>".join(f"`{line}`" for line in value.splitlines())
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value)}`"


def _default(item: Field) -> str:
    return "" if item.default is None else _value(item.default)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _bounds(low: float | None, high: float | None, unit: str = "") -> str:
    unit = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"{_number(low)} to {_number(high)}{unit}"
    if low is not None:
        return f"{_number(low)} or more{unit}"
    if high is not None:
        return f"at most {_number(high)}{unit}"
    return ""


def _allowed(item: Field) -> str:
    parts = []
    if item.choices is not None:
        parts.append("one of " + ", ".join(_value(choice) for choice in item.choices))
    parts.append(_bounds(item.minimum, item.maximum))
    parts.append(_bounds(item.min_length, item.max_length, "items" if item.type == "list" else "characters"))
    if item.item_choices is not None:
        parts.append("items: " + ", ".join(_value(choice) for choice in item.item_choices))
    if item.unique_items:
        parts.append("no item twice")
    if item.references == "service":
        parts.append("the name of a service")
    elif item.references:
        parts.append(f"the name of a `{item.references}` object")
    return "; ".join(part for part in parts if part)


def _description(item: Field) -> str:
    text = item.description.strip()
    if text and not text.endswith((".", "!", "?")):
        text += "."
    if item.example is not None:
        text += f" Example: {_value(item.example)}."
    return text.strip()


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


# ################################################################################################
# Marked regions of a document


@dataclass(frozen=True)
class Region:
    object_type: str
    line: int  # of the start marker, from 1


def regions(text: str, where: str = "<text>") -> list[Region]:
    """ The marked regions of a document; a marker without its pair is a `FieldTableError`. """
    found = [Region(match["type"], text.count("\n", 0, match.start()) + 1) for match in REGION.finditer(text)]
    paired = {(region.object_type, region.line) for region in found}
    for match in START.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if match["end"] == "start" and (match["type"], line) not in paired:
            raise FieldTableError(f"{where}:{line}: <!-- fields:{match['type']} start --> has no "
                                  f"<!-- fields:{match['type']} end --> after it (each on a line of its own); add it")
    ends = sum(1 for match in START.finditer(text) if match["end"] == "end")
    if ends != len(found):
        raise FieldTableError(f"{where}: an <!-- fields:TYPE end --> marker has no start marker before it")
    return found


def render(text: str, object_types: Mapping[str, ObjectType], where: str = "<text>") -> str:
    """ `text` with every marked region's table generated from its object type's schema. """
    regions(text, where)

    def table(match: re.Match[str]) -> str:
        name = match["type"]
        if name not in object_types:
            line = text.count("\n", 0, match.start()) + 1
            raise FieldTableError(f"{where}:{line}: no object type {name!r} is registered (known: "
                                  f"{', '.join(sorted(object_types))}); fix the marker's name, or install and "
                                  f"enable the plugin that registers it")
        return f"<!-- fields:{name} start -->\n{field_table(object_types[name])}<!-- fields:{name} end -->"

    return REGION.sub(table, text)


def documents(root: Path) -> list[Path]:
    """ The repository's documents that may hold marked regions. """
    candidates = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted(root.glob("plugins/*/README.md"))]
    return [path for path in candidates if path.is_file()]


def stale(paths: Iterable[Path], object_types: Mapping[str, ObjectType]) -> list[Path]:
    """ The documents whose marked regions differ from what their schemas generate. """
    out = []
    for path in paths:
        text = path.read_text("utf-8")
        if render(text, object_types, str(path)) != text:
            out.append(path)
    return out


def registered_object_types() -> dict[str, ObjectType]:
    """ Every installed plugin's object types (switches ignored: a README documents its plugin
    whether a server enables it or not). """
    from zato.plugins import discover_plugins, load_plugins
    from zato.registry import Kind
    every = {plugin.name: True for plugin in discover_plugins()}  # those off until switched on too
    return load_plugins(every).registry.items(Kind.OBJECT_TYPES)


def main(argv: list[str] | None = None, *, root: Path | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE, description=(
        "Rewrite the field tables between <!-- fields:TYPE start --> and <!-- fields:TYPE end --> from each "
        "object type's schema."))
    parser.add_argument("files", nargs="*", type=Path,
                        help="documents to rewrite (default: README.md, docs/*.md and plugins/*/README.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    args = parser.parse_args(argv)
    paths = args.files or documents(root or Path.cwd())
    object_types = registered_object_types()
    try:
        changed = stale(paths, object_types)
    except FieldTableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for path in changed:
            print(f"{path}: a field table differs from its schema; run {REGENERATE}", file=sys.stderr)
        return 1 if changed else 0
    for path in changed:
        text = path.read_text("utf-8")
        path.write_text(render(text, object_types, str(path)), "utf-8")
        print(f"rewrote the field tables of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
