""" `zato plugin new` (zato.cli.scaffold): the names and directories it refuses (exit code 2,
saying why and what to use), the files each --kind writes, that they are clean Python whose
object types describe every field and whose README tables list them all, and that a generated
plugin loads in a server in this process and works against its own test peer. Building,
installing and running its own tests in a fresh virtual environment is
tests/packaging/test_scaffold.py (slow). """

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from zato.cli import scaffold
from zato.cli.scaffold import FILES, KINDS, TEMPLATES, Plan, name_problem, new, object_types_of, render
from zato.registry import Kind, ObjectType

COMMON = {"pyproject.toml", "README.md", ".gitignore", "src/zato_plugin_{n}/__init__.py",
          "src/zato_plugin_{n}/objects.py", "src/zato_plugin_{n}/http_api.py", "src/zato_plugin_{n}/testing.py",
          "bench/bench_{n}.py"}
OUTGOING = {"src/zato_plugin_{n}/connection.py", "tests/test_{n}_outgoing.py"}
CHANNEL = {"src/zato_plugin_{n}/channel.py", "tests/test_{n}_channel.py"}
EXPECTED = {"outgoing": COMMON | OUTGOING, "channel": COMMON | CHANNEL, "both": COMMON | OUTGOING | CHANNEL}


def invoke(*args: str | Path):
    return CliRunner().invoke(new, [str(arg) for arg in args])


def generate(tmp_path: Path, kind: str, name: str = "demo") -> Path:
    directory = tmp_path / f"{name}-{kind}"
    result = invoke(name, "--kind", kind, "--dir", directory)
    assert result.exit_code == 0, result.output
    return directory


def files_of(directory: Path) -> set[str]:
    return {path.relative_to(directory).as_posix() for path in directory.rglob("*") if path.is_file()}


def generated_object_types(directory: Path, name: str = "demo") -> dict[str, ObjectType]:
    package = f"zato_plugin_{name}"
    return object_types_of((directory / "src" / package / "objects.py").read_text("utf-8"), package)


# ################################################################################################
# Names and directories it refuses


@pytest.mark.parametrize("name, reason, instead", [
    ("MyApi", "capital letters", "'myapi'"),
    ("my-api", "dashes", "'my_api'"),
    ("my.api", "not a valid Python identifier", "'my_api'"),
    ("1api", "not a valid Python identifier", "'my_1api'"),
    ("class", "Python keyword", "'class_api'"),
    ("", "empty", "'crm'"),
    ("cache", "the core's built-in plugin 'cache'", "another name"),
    ("listeners", "the core's built-in plugin 'listeners'", "another name"),
    ("core", "former name of the built-in plugin 'essentials'", "another name"),
    ("ftp", "zato-plugin-ftp", "another name"),
    ("plain_http", "self.out.plain_http", "another name"),
])
def test_names_that_cannot_be_a_plugin_are_refused_saying_why(tmp_path, name, reason, instead):
    result = invoke(name, "--dir", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert reason in result.output and instead in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_the_name_of_an_installed_plugin_is_refused_naming_its_distribution(tmp_path, plugin_site):
    plugin_site.add("scaffoldclash", "", distribution="zato-plugin-somebody-elses")
    importlib.invalidate_caches()
    result = invoke("scaffoldclash", "--dir", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "installed plugin (zato-plugin-somebody-elses" in result.output, result.output
    assert name_problem("scaffold_free_name") is None


def test_a_name_whose_module_is_importable_already_is_refused(tmp_path, plugin_site):
    (plugin_site.root / "zato_plugin_leftover.py").write_text("")   # a module without an entry point
    importlib.invalidate_caches()
    result = invoke("leftover", "--dir", tmp_path / "out")
    assert result.exit_code == 2 and "a module named zato_plugin_leftover is installed already" in result.output, \
        result.output


def test_a_directory_that_is_not_empty_is_refused_and_left_alone(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    result = invoke("demo", "--dir", taken)
    assert result.exit_code == 2 and "not empty" in result.output, result.output
    assert files_of(taken) == {"notes.txt"}

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = invoke("demo", "--dir", a_file)
    assert result.exit_code == 2, result.output

    empty = tmp_path / "empty"
    empty.mkdir()
    assert invoke("demo", "--dir", empty).exit_code == 0
    assert "pyproject.toml" in files_of(empty)


def test_without_dir_it_writes_zato_plugin_name_in_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("billing_api", "--kind", "outgoing")
    assert result.exit_code == 0, result.output
    written = tmp_path / "zato-plugin-billing-api"
    assert (written / "src" / "zato_plugin_billing_api" / "connection.py").is_file()
    assert 'name = "zato-plugin-billing-api"' in (written / "pyproject.toml").read_text()
    assert "pip install -e '.[test]'" in result.output


# ################################################################################################
# What each kind writes


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_writes_its_files(tmp_path, kind):
    directory = generate(tmp_path, kind)
    assert files_of(directory) == {path.format(n="demo") for path in EXPECTED[kind]}


@pytest.mark.parametrize("kind", KINDS)
def test_the_generated_python_compiles_and_no_placeholder_is_left(tmp_path, kind):
    directory = generate(tmp_path, kind)
    for path in directory.rglob("*"):
        if path.is_file():
            text = path.read_text("utf-8")
            assert not re.search(r"\{\{\s*[#/]?\w+\s*\}\}", text), path
            if path.suffix == ".py":
                ast.parse(text, str(path))
                compile(text, str(path), "exec")


def test_the_generated_code_is_clean_for_ruff(tmp_path):
    uvx = shutil.which("uvx")
    if uvx is None:
        pytest.skip("uvx is not on PATH")
    for kind in KINDS:
        generate(tmp_path, kind)
    try:
        result = subprocess.run([uvx, "ruff", "check", "--select", "F401,F821,F811,F841", "--no-cache", str(tmp_path)],
                                capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("uvx ruff did not start within 120 s")
    if "All checks passed" not in result.stdout and "Found" not in result.stdout:
        pytest.skip(f"ruff could not run: {result.stdout}{result.stderr}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_pyproject_has_the_entry_point_the_test_extra_and_pytest_in_trio_mode(tmp_path):
    import tomllib
    data = tomllib.loads((generate(tmp_path, "both") / "pyproject.toml").read_text("utf-8"))
    project = data["project"]
    assert project["name"] == "zato-plugin-demo"
    assert project["entry-points"]["zato.plugins"] == {"demo": "zato_plugin_demo"}
    assert any(dependency.startswith("zato-core") for dependency in project["dependencies"])
    assert {"pytest", "pytest-trio"} <= {re.split(r"[<>=]", dependency)[0] for dependency in
                                        project["optional-dependencies"]["test"]}
    assert data["tool"]["pytest"]["ini_options"]["trio_mode"] is True
    assert data["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/zato_plugin_demo"]


@pytest.mark.parametrize("kind, types", [("outgoing", {"outgoing_demo"}), ("channel", {"channel_demo"}),
                                         ("both", {"outgoing_demo", "channel_demo"})])
def test_every_field_is_described_and_in_the_readme_table(tmp_path, kind, types):
    directory = generate(tmp_path, kind)
    object_types = generated_object_types(directory)
    assert set(object_types) == types
    readme = (directory / "README.md").read_text("utf-8")
    for object_type in object_types.values():
        assert object_type.description
        for field in object_type.fields:
            assert field.description.strip(), f"{object_type.name}.{field.name} has no description"
        region = re.search(rf"<!-- fields:{object_type.name} start -->\n(.*?)<!-- fields:{object_type.name} end -->",
                           readme, re.DOTALL)
        assert region, f"no table of {object_type.name} in README.md"
        rows = [line for line in region.group(1).splitlines() if line.startswith("| `")]
        assert [row.split("|")[1].strip().strip("`") for row in rows] == [f.name for f in object_type.fields]
        header = region.group(1).splitlines()[1]
        for column in ("field", "type", "default", "description"):
            assert column in header
        for row, field in zip(rows, object_type.fields):
            assert field.description.split(";")[0] in row, row
    # the tests and benchmark of the kind are described too
    assert ("TestDemoConformance" in readme) == (kind != "channel")
    assert ("TestDemoListenerConformance" in readme) == (kind != "outgoing")


def test_the_generated_tests_run_the_conformance_suites(tmp_path):
    directory = generate(tmp_path, "both")
    outgoing = (directory / "tests" / "test_demo_outgoing.py").read_text()
    channel = (directory / "tests" / "test_demo_channel.py").read_text()
    assert "class TestDemoConformance(OutgoingConnectionConformance):" in outgoing
    assert "class TestDemoListenerConformance(ListenerConformance):" in channel
    assert "from zato_plugin_demo.testing import DemoTestServer" in outgoing and "DemoTestServer" in channel


# ################################################################################################
# The renderer


def test_render_keeps_the_blocks_of_the_kind_and_refuses_unknown_placeholders():
    text = "a {{name}}\n{{#outgoing}}\nout\n{{/outgoing}}\n{{#channel_only}}\nchannel only\n{{/channel_only}}\nz\n"
    assert render(text, {"name": "x"}, "outgoing") == "a x\nout\nz\n"
    assert render(text, {"name": "x"}, "channel") == "a x\nchannel only\nz\n"
    assert render(text, {"name": "x"}, "both") == "a x\nout\nz\n"
    with pytest.raises(ValueError, match="unknown placeholder"):
        render("{{nope}}", {"name": "x"}, "both")
    with pytest.raises(ValueError, match="not closed"):
        render("{{#outgoing}}\nx\n", {}, "both")
    with pytest.raises(ValueError, match="closes no"):
        render("{{/channel}}\n", {}, "both")


def test_every_template_is_used_and_renders_for_every_kind():
    templates = {path.relative_to(TEMPLATES).as_posix() for path in TEMPLATES.rglob("*.tmpl")}
    assert templates == {template for template, _, _ in FILES}
    for kind in KINDS:
        files = scaffold.plan_files(Plan("demo", kind, Path("/nowhere")))
        assert set(files) == {path.format(n="demo") for path in EXPECTED[kind]}


# ################################################################################################
# A generated plugin, loaded in a server in this process


def install_in_site(plugin_site, directory: Path, name: str) -> str:
    """ The generated package on the plugin site's path with its entry point, as pip would install it. """
    package = f"zato_plugin_{name}"
    shutil.copytree(directory / "src" / package, plugin_site.root / package)
    dist_info = plugin_site.root / f"{package}-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: zato-plugin-{name}\nVersion: 0.1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[zato.plugins]\n{name} = {package}\n")
    importlib.invalidate_caches()
    return package


async def test_a_generated_plugin_loads_and_works_against_its_test_peer(tmp_path, plugin_site):
    from zato.testing import admin_auth, create_test_server_dir, run_server
    from zato.testing.conformance import LISTENER_SERVICES, RECORD_SERVICE, listener_log, wait_until

    name = f"scaffolded_{uuid.uuid4().hex[:8]}"
    package = install_in_site(plugin_site, generate(tmp_path, "both", name), name)
    try:
        testing = importlib.import_module(f"{package}.testing")
        test_server = getattr(testing, scaffold.placeholders(Plan(name, "both", tmp_path))["Name"] + "TestServer")
        with test_server() as api:
            async with run_server(create_test_server_dir(tmp_path / "server")) as server:
                assert {f"outgoing_{name}", f"channel_{name}"} <= set(dict(server.registry.items(Kind.OBJECT_TYPES)))
                async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=30,
                                             headers={"content-type": "application/json"}) as admin:
                    reply = await admin.post(f"/zato/api/objects/outgoing_{name}",
                                             json={"name": "api", "address": api.address, "queue": "orders"})
                    assert reply.status_code == 201, reply.text
                    reply = await admin.post(f"/zato/api/outgoing/{name}/api/ping")
                    assert reply.status_code == 200 and reply.json()["ok"], reply.text
                    connection = server.outgoing.map(f"out.{name}")["api"]
                    item_id = await connection.conn.send({"order": 1})   # on the trio loop: awaited
                    assert isinstance(item_id, int) and api.pending("orders") == [{"order": 1}]

                    reply = await admin.post("/zato/api/deploy/scaffold_services.py", content=LISTENER_SERVICES.encode(),
                                             headers={"content-type": "text/x-python"})
                    assert reply.status_code == 200, reply.text
                    reply = await admin.post(f"/zato/api/objects/channel_{name}", json={
                        "name": "incoming", "address": api.address, "queue": "orders", "service": RECORD_SERVICE,
                        "poll_wait": 0.2})
                    assert reply.status_code == 201, reply.text
                    log = listener_log(server)
                    [call] = await wait_until(lambda: [c for c in log.calls if c.payload == {"order": 1}],
                                              "the item sent reached the channel's service")
                    assert call.channel == "incoming" and call.attributes[name].queue == "orders"
                    await wait_until(lambda: api.pending("orders") == [], "the item is acknowledged")
    finally:
        for module in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            sys.modules.pop(module, None)
