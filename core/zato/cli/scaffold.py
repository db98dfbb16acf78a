""" `zato plugin new NAME [--kind outgoing|channel|both] [--dir DIR]`: writes a complete plugin
distribution, `zato-plugin-NAME`, in the layout of the connectors under plugins/ of this
repository: its pyproject (the `zato.plugins` entry point, a `test` extra), the hook
implementations, object types whose every field is described, an outgoing connection and/or a
listener channel, a README with the configuration tables, tests that run the core's conformance
suites against a real peer (a small HTTP JSON API the package brings in `testing.py`), and a
benchmark. What it writes installs, builds and passes its own tests as it is.

The templates are files under `zato/cli/scaffold_templates/` (`*.tmpl`, readable as the code they
become). They use two forms only, so that no template engine is needed:

* `{{key}}` - replaced by a value of `placeholders()` (`{{name}}`, `{{Name}}`, `{{package}}`...);
  an unknown key is an error, never left in the output;
* a line `{{#outgoing}}` ... a line `{{/outgoing}}` - the lines between are kept only when the
  plugin has an outgoing connection (likewise `channel`; `both`, `outgoing_only` and
  `channel_only` for one kind and not the other).
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import sys
import types
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import click

TEMPLATES = Path(__file__).resolve().parent / "scaffold_templates"
KINDS = ("outgoing", "channel", "both")
ENTRY_POINT_GROUP = "zato.plugins"

# template file (under TEMPLATES) -> where it goes in the distribution, and for which kinds
FILES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("pyproject.toml.tmpl", "pyproject.toml", KINDS),
    ("README.md.tmpl", "README.md", KINDS),
    ("gitignore.tmpl", ".gitignore", KINDS),
    ("package/__init__.py.tmpl", "src/{{package}}/__init__.py", KINDS),
    ("package/objects.py.tmpl", "src/{{package}}/objects.py", KINDS),
    ("package/http_api.py.tmpl", "src/{{package}}/http_api.py", KINDS),
    ("package/connection.py.tmpl", "src/{{package}}/connection.py", ("outgoing", "both")),
    ("package/channel.py.tmpl", "src/{{package}}/channel.py", ("channel", "both")),
    ("package/testing.py.tmpl", "src/{{package}}/testing.py", KINDS),
    ("tests/test_outgoing.py.tmpl", "tests/test_{{name}}_outgoing.py", ("outgoing", "both")),
    ("tests/test_channel.py.tmpl", "tests/test_{{name}}_channel.py", ("channel", "both")),
    ("bench/bench.py.tmpl", "bench/bench_{{name}}.py", KINDS),
)

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
BLOCK = re.compile(r"^\s*\{\{([#/])(outgoing|channel|both|outgoing_only|channel_only)\}\}\s*$")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ScaffoldRefused(click.ClickException):
    """ A name or directory `zato plugin new` will not use; the message says why and what to use. """
    exit_code = 2


# ################################################################################################
# The name


def taken_names() -> dict[str, str]:
    """ Plugin names in use -> what uses them: the core's built-in plugins, their former names,
    this project's connectors (installed or not) and every installed `zato.plugins` entry point. """
    from zato.plugins import DEFAULT_PLUGINS, PLUGIN_DISTRIBUTIONS, RENAMED_PLUGINS
    taken = {name: f"the core's built-in plugin {name!r} ({module})" for name, module in DEFAULT_PLUGINS.items()}
    taken.update({old: f"the former name of the built-in plugin {new!r}" for old, new in RENAMED_PLUGINS.items()})
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        distribution = getattr(entry_point.dist, "name", None) or "an installed distribution"
        taken.setdefault(entry_point.name, f"an installed plugin ({distribution}, entry point "
                                           f"{entry_point.name} = {entry_point.value})")
    for name, distribution in PLUGIN_DISTRIBUTIONS.items():
        taken.setdefault(name, f"the plugin of {distribution}, a connector of this project (not installed here)")
    return taken


def name_problem(name: str) -> str | None:
    """ Why `name` cannot be a new plugin's name (with what to use instead), or None. """
    suggestion = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    if suggestion and not suggestion[0].isalpha():
        suggestion = f"my_{suggestion}"
    instead = f"; use {suggestion!r} instead" if suggestion and NAME.match(suggestion) and suggestion != name \
        and not keyword.iskeyword(suggestion) else ""
    if not name:
        return "the name is empty; give one such as 'crm' or 'billing_api'"
    if "-" in name:
        distribution = f" (its distribution is then zato-plugin-{suggestion.replace('_', '-')})" if instead else ""
        return (f"{name!r} has dashes; a plugin's name is also its Python module's (zato_plugin_<name>), so use "
                f"underscores{instead}{distribution}")
    if name != name.lower():
        return f"{name!r} has capital letters; plugin names are lower case{instead}"
    if keyword.iskeyword(name):
        return f"{name!r} is a Python keyword, so it cannot name the attribute services use; use e.g. '{name}_api'"
    if not name.isidentifier() or not NAME.match(name):
        return (f"{name!r} is not a valid Python identifier of lower-case letters, digits and underscores starting "
                f"with a letter{instead}")
    from zato.plugins import SERVICE_USES
    taken = taken_names()
    if name in taken:
        return f"{name!r} is taken: it is {taken[name]}; choose another name"
    package = f"zato_plugin_{name}"
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is not None:
        where = found.origin or ", ".join(found.submodule_search_locations or ()) or "this environment"
        return (f"a module named {package} is installed already ({where}), so the new plugin's would clash with it; "
                f"choose another name")
    for use in (f"out.{name}", f"request.{name}"):
        if use in SERVICE_USES:
            return (f"{name!r} would make services use self.{use}, which the {SERVICE_USES[use]!r} plugin provides; "
                    f"choose another name")
    return None


# ################################################################################################
# Rendering


@dataclass(frozen=True)
class Plan:
    name: str
    kind: str
    directory: Path

    @property
    def outgoing(self) -> bool:
        return self.kind in ("outgoing", "both")

    @property
    def channel(self) -> bool:
        return self.kind in ("channel", "both")


def placeholders(plan: Plan) -> dict[str, str]:
    from zato import __version__
    name = plan.name
    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Plugin"
    kinds = {"outgoing": "an outgoing connection", "channel": "a listener channel",
             "both": "an outgoing connection and a listener channel"}
    return {
        "name": name,                                    # demo
        "Name": camel,                                   # Demo: class names
        "NAME": name.upper(),                            # DEMO: environment variables
        "package": f"zato_plugin_{name}",                # the import package
        "distribution": f"zato-plugin-{name.replace('_', '-')}",
        "core_version": __version__,                     # the core it is written against
        "kind": plan.kind,
        "kind_text": kinds[plan.kind],
        "outgoing_type": f"outgoing_{name}",
        "channel_type": f"channel_{name}",
    }


def render(text: str, values: dict[str, str], kind: str, where: str = "<template>") -> str:
    """ `text` with its blocks for other kinds dropped and its `{{key}}`s replaced. """
    wanted = {"outgoing": kind in ("outgoing", "both"), "channel": kind in ("channel", "both"),
              "both": kind == "both", "outgoing_only": kind == "outgoing", "channel_only": kind == "channel"}
    kept: list[str] = []
    open_blocks: list[tuple[str, bool]] = []
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        block = BLOCK.match(line)
        if block:
            sign, block_kind = block.groups()
            if sign == "#":
                open_blocks.append((block_kind, wanted[block_kind]))
            elif not open_blocks or open_blocks.pop()[0] != block_kind:
                raise ValueError(f"{where}:{number}: {{{{/{block_kind}}}}} closes no {{{{#{block_kind}}}}}")
            continue
        if all(keep for _, keep in open_blocks):
            kept.append(line)
    if open_blocks:
        raise ValueError(f"{where}: {{{{#{open_blocks[-1][0]}}}}} is not closed")

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ValueError(f"{where}: unknown placeholder {{{{{key}}}}} (known: {', '.join(sorted(values))})")
        return values[key]

    return PLACEHOLDER.sub(value, "".join(kept))


def object_types_of(objects_source: str, package: str) -> dict[str, object]:
    """ The object types the generated objects.py defines (it imports only zato.plugin_api), for
    the README's field tables, generated exactly as scripts/field_tables generates the repository's. """
    from zato.registry import ObjectType
    module = types.ModuleType(f"{package}.objects")
    exec(compile(objects_source, f"{package}/objects.py", "exec"), module.__dict__)
    return {value.name: value for value in vars(module).values() if isinstance(value, ObjectType)}


def plan_files(plan: Plan) -> dict[str, str]:
    """ Relative path -> text of every file of the distribution. """
    from zato.field_tables import render as render_tables
    values = placeholders(plan)
    files: dict[str, str] = {}
    for template, target, kinds in FILES:
        if plan.kind not in kinds:
            continue
        text = (TEMPLATES / template).read_text("utf-8")
        files[render(target, values, plan.kind, template)] = render(text, values, plan.kind, template)
    objects_path = f"src/{values['package']}/objects.py"
    object_types = object_types_of(files[objects_path], values["package"])
    files["README.md"] = render_tables(files["README.md"], object_types, "README.md")  # type: ignore[arg-type]
    return files


def write(plan: Plan) -> list[Path]:
    """ Writes the distribution into `plan.directory` (made if missing, refused if not empty). """
    directory = plan.directory
    if directory.exists() and not directory.is_dir():
        raise ScaffoldRefused(f"{directory} exists and is not a directory; give --dir a new or empty directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise ScaffoldRefused(f"{directory} exists and is not empty; nothing was written. Give --dir a new or "
                              f"empty directory")
    files = plan_files(plan)
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
        written.append(path)
    return written


# ################################################################################################


@click.command("new")
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), default="both", show_default=True,
              help="outgoing: a connection services call (self.out.NAME[name].conn); channel: a listener that "
                   "takes items off the API and gives each to a service; both.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the distribution (made if missing; it must be empty). Default: "
                   "./zato-plugin-NAME.")
def new(name: str, kind: str, directory: Path | None) -> None:
    """ Writes a new plugin distribution, zato-plugin-NAME, that builds, installs and passes its
    own tests as it is: a connector to a small HTTP JSON API to change into yours.

    NAME is the plugin's name: lower case letters, digits and underscores (its module is
    zato_plugin_NAME; services reach it as self.out.NAME and self.request.NAME). """
    problem = name_problem(name)
    if problem:
        raise ScaffoldRefused(f"cannot create a plugin named {name!r}: {problem}")
    plan = Plan(name, kind, (directory or Path.cwd() / f"zato-plugin-{name.replace('_', '-')}").resolve())
    written = write(plan)
    values = placeholders(plan)
    top = plan.directory
    click.echo(f"Wrote {values['distribution']} ({values['kind_text']}) in {top}:")
    for path in sorted(written):
        click.echo(f"  {path.relative_to(top)}")
    venv_hint = "" if sys.prefix != sys.base_prefix else " (in a virtual environment with zato-core)"
    click.echo(f"\nNext{venv_hint}:\n"
               f"  cd {top}\n"
               f"  pip install -e '.[test]'\n"
               f"  pytest                      # the conformance suites against the test peer\n"
               f"  python bench/bench_{name}.py\n"
               f"Then change the TODOs into your API (README.md says where).")
