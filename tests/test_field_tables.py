""" The field tables of README.md, docs/*.md and plugins/*/README.md are the ones their object
types' schemas generate (`zato.field_tables`, rewritten by scripts/field_tables). """

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zato.field_tables import FieldTableError, documents, field_table, main, registered_object_types, regions, render, stale
from zato.registry import Field, ObjectType

ROOT = Path(__file__).resolve().parent.parent

# document -> the object types it must have a generated table of
EXPECTED_TABLES = {
    "plugins/smtp/README.md": ["email_smtp"],
    "plugins/sql/README.md": ["outgoing_sql"],
    "plugins/redis/README.md": ["outgoing_redis"],
    "plugins/ibm_mq/README.md": ["definition_ibm_mq", "channel_ibm_mq", "outgoing_ibm_mq"],
    "plugins/dropbox/README.md": ["cloud_dropbox"],
    "plugins/ftp/README.md": ["outgoing_ftp"],
    "plugins/wsx/README.md": ["channel_web_socket", "outgoing_wsx"],
    "docs/outgoing.md": ["outgoing_rest"],
}

THING = ObjectType("thing", (
    Field("name", required=True, description="What it is called"),
    Field("mode", default="fast", choices=("fast", "safe"), description="How | it runs", example="safe"),
    Field("port", "int", minimum=1, maximum=65535),
    Field("ratio", "float", default=0.5, minimum=0),
    Field("tags", "list", item_type="str", min_length=1, unique_items=True, item_choices=("a", "b")),
    Field("password", secret=True, description="Its password"),
    Field("security", references="security"),
    Field("extra", default="", example="echo=True\nmax_overflow=5"),
    Field("enabled", "bool", default=False),
))


def test_every_marked_table_is_the_one_its_schema_generates():
    object_types = registered_object_types()
    changed = stale(documents(ROOT), object_types)
    assert not changed, (f"field tables differ from their schemas in {', '.join(str(p.relative_to(ROOT)) for p in changed)}; "
                         f"run scripts/field_tables to regenerate them")


def test_the_connectors_documents_have_their_generated_tables():
    checked = {str(path.relative_to(ROOT)) for path in documents(ROOT)}
    for document, object_types in EXPECTED_TABLES.items():
        assert document in checked
        marked = [region.object_type for region in regions((ROOT / document).read_text("utf-8"), document)]
        assert marked == object_types, document


def test_a_table_has_a_row_per_field_with_type_required_default_allowed_values_and_description():
    lines = field_table(THING).splitlines()
    assert lines[1] == "| field | type | required | default | allowed | description |"
    rows = {line.split(" | ")[0].strip("| `"): line for line in lines[3:]}
    assert list(rows) == [item.name for item in THING.fields]
    assert rows["name"] == "| `name` | str | yes |  |  | What it is called. |"
    assert rows["mode"] == "| `mode` | str | no | `fast` | one of `fast`, `safe` | How \\| it runs. Example: `safe`. |"
    assert rows["port"] == "| `port` | int | no |  | 1 to 65535 |  |"
    assert rows["ratio"] == "| `ratio` | float | no | `0.5` | 0 or more |  |"
    assert rows["tags"] == "| `tags` | list of str | no |  | 1 or more items; items: `a`, `b`; no item twice |  |"
    assert rows["password"] == "| `password` | str, secret | no |  |  | Its password. |"
    assert rows["security"] == "| `security` | str | no |  | the name of a `security` object |  |"
    assert rows["extra"] == "| `extra` | str | no | `\"\"` |  | Example: `echo=True`<br>`max_overflow=5`. |"
    assert rows["enabled"] == "| `enabled` | bool | no | `false` |  |  |"


def test_only_the_marked_region_is_rewritten():
    text = ("# Thing\n\nBefore, quoting `<!-- fields:thing start -->`.\n\n<!-- fields:thing start -->\n"
            "| field | default |\n|---|---|\n| `name` | hand-written |\n<!-- fields:thing end -->\n\nAfter.\n")
    rendered = render(text, {"thing": THING})
    assert rendered == text.replace("| field | default |\n|---|---|\n| `name` | hand-written |\n", field_table(THING))
    assert render(rendered, {"thing": THING}) == rendered


def test_a_marker_naming_no_object_type_or_without_its_end_is_an_error_naming_file_and_line():
    with pytest.raises(FieldTableError, match=r"README.md:3: no object type 'thnig' is registered \(known: thing\)"):
        render("# x\n\n<!-- fields:thnig start -->\n<!-- fields:thnig end -->\n", {"thing": THING}, "README.md")
    with pytest.raises(FieldTableError, match=r"README.md:2: <!-- fields:thing start --> has no "
                                              r"<!-- fields:thing end -->"):
        render("# x\n<!-- fields:thing start -->\n| stale |\n", {"thing": THING}, "README.md")


def test_check_fails_naming_the_command_and_a_run_rewrites_the_table(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- fields:email_smtp start -->\n| `port` | `26` |\n<!-- fields:email_smtp end -->\n", "utf-8")
    assert main(["--check", str(readme)]) == 1
    assert f"{readme}: a field table differs from its schema; run scripts/field_tables" in capsys.readouterr().err
    assert main([str(readme)]) == 0
    assert "| `port` | int | no | `25` | 1 to 65535 |" in readme.read_text("utf-8")
    assert main(["--check", str(readme)]) == 0


def test_the_script_checks_the_repository():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "field_tables"), "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
