""" Every package builds as a wheel, and `pip install --find-links DIST zato-plugin-NAME` into a
fresh virtual environment installs that plugin and the core, after which the plugin is found
through its `zato.plugins` entry point: by `zato plugins list`, by the CLI and by a running server.

The plugin installed is the small test plugin in tests/packaging/testdist (zato-plugin-testdist).
Wheels and the virtual environment are built once per module (see `installed`; the core's wheel
once per session, shared with test_scaffold.py: conftest.py); dependencies such as trio come from
the package index, so pip's cache makes reruns faster. The helpers are in packaging_helpers.py.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from packaging_helpers import (
    CORE_DISTRIBUTION, INSTALL_TIMEOUT, REPO_ROOT, Project, Wheel, build_wheels, canonical, clean_env, index_problem,
    index_unreachable, python311, run,
)

pytestmark = pytest.mark.slow

SERVER_START_TIMEOUT = 60
TESTDIST_DIR = Path(__file__).resolve().parent / "testdist"
TESTDIST_DISTRIBUTION = "zato-plugin-testdist"
TESTDIST_PLUGIN = "testdist"
TESTDIST_MODULE = "zato_plugin_testdist"
TESTDIST_CLI_GREETING = "hello from zato-plugin-testdist"  # zato_plugin_testdist.CLI_GREETING
ADMIN_PASSWORD = "x"

# ################################################################################################


def workspace_members() -> list[Path]:
    """ Directories of the uv workspace members (plugins/*), per the root pyproject.toml. """
    workspace = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8")).get("tool", {}).get("uv", {}) \
        .get("workspace", {})
    excluded = workspace.get("exclude", [])
    members: set[Path] = set()
    for pattern in workspace.get("members", []):
        for directory in REPO_ROOT.glob(pattern):
            relative = directory.relative_to(REPO_ROOT).as_posix()
            if any(fnmatch.fnmatch(relative, ex) for ex in excluded):
                continue
            if (directory / "pyproject.toml").is_file():
                members.add(directory)
    return sorted(members)


@dataclass
class Installed:
    dist: Path
    venv: Path
    work: Path
    projects: list[Project]
    wheels: dict[str, Wheel]  # canonical name -> wheel
    build_seconds: float
    install_seconds: float
    install_output: str

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def zato(self) -> Path:
        return self.venv / "bin" / "zato"

    def run_zato(self, *args: str | Path, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run([self.zato, *args], cwd=self.work, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, core_wheel: Wheel) -> Installed:
    """ Wheels of the core, of every workspace member and of the test plugin in DIST, and a fresh
    virtual environment into which `pip install --find-links DIST zato-plugin-testdist` ran. The
    core's wheel is the session's (conftest.py), built once for every packaging test. """
    base = tmp_path_factory.mktemp("packaging")
    dist, venv, work = base / "dist", base / "venv", base / "work"
    dist.mkdir()
    work.mkdir()  # subprocesses run here, away from the source tree

    projects = [Project.read(REPO_ROOT)] + [Project.read(d) for d in workspace_members()] + [Project.read(TESTDIST_DIR)]
    names = [p.name for p in projects]
    assert len(set(names)) == len(names), f"two projects build the same distribution: {names}"
    own = set(names)

    started = time.perf_counter()
    shutil.copy2(core_wheel.path, dist / core_wheel.path.name)
    build_wheels([p for p in projects if p.name != CORE_DISTRIBUTION], dist, work, own)
    build_seconds = time.perf_counter() - started + core_wheel.build_seconds
    wheels = {w.name: w for w in map(Wheel.parse, dist.glob("*.whl"))}

    started = time.perf_counter()
    run([python311(), "-m", "venv", venv], cwd=work, timeout=300)
    python = venv / "bin" / "python"
    # The command form of the requirement: pip install --find-links DIST zato-plugin-NAME
    command = [python, "-m", "pip", "install", "--find-links", dist, TESTDIST_DISTRIBUTION]
    result = run(command, cwd=work, timeout=INSTALL_TIMEOUT, check=False)
    if result.returncode != 0:
        if index_unreachable(result.stdout + result.stderr, own):
            index_problem("`pip install --find-links DIST zato-plugin-testdist`", result)
        pytest.fail(f"`pip install --find-links {dist} {TESTDIST_DISTRIBUTION}` exited with {result.returncode}\n"
                    f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}", pytrace=False)
    install_seconds = time.perf_counter() - started
    return Installed(dist, venv, work, projects, wheels, build_seconds, install_seconds, result.stdout + result.stderr)


def installed_distributions(installed: Installed) -> dict[str, dict[str, str]]:
    """ canonical name -> {version, location of its files} of what the fresh venv holds. """
    script = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for d in m.distributions():\n"
        "    out[d.metadata['Name']] = {'version': d.version, 'location': str(d.locate_file(''))}\n"
        "print(json.dumps(out))\n"
    )
    result = run([installed.python, "-c", script], cwd=installed.work, timeout=60)
    return {canonical(name): info for name, info in json.loads(result.stdout).items()}


def plugins_list(installed: Installed, *args: str | Path) -> dict[str, dict]:
    result = installed.run_zato("plugins", "list", *args, "--json")
    return {row["name"]: row for row in json.loads(result.stdout)}


def quickstart(installed: Installed, directory: Path) -> Path:
    installed.run_zato("quickstart", "create", directory, "--port", "0", "--admin-password", ADMIN_PASSWORD)
    assert (directory / "config" / "server.conf").is_file()
    return directory


def set_plugin_switch(server_dir: Path, module: str, enabled: bool) -> None:
    """ Sets `module = True/False` under [deploy_internal] in server.conf (a plugin's key is its
    module), keeping everything else as it is. """
    conf = server_dir / "config" / "server.conf"
    text = conf.read_text("utf-8")
    line = f"{module} = {enabled}"
    text, count = re.subn(rf"(?m)^#?\s*{re.escape(module)}\s*=.*$", line, text)
    if not count:
        text, count = re.subn(r"(?m)^\[deploy_internal\][^\n]*\n", lambda m: m.group(0) + line + "\n", text)
    assert count == 1, f"no [deploy_internal] section in {conf}"
    conf.write_text(text, "utf-8")


# ################################################################################################


def test_every_package_builds_a_wheel(installed: Installed) -> None:
    expected = {p.name for p in installed.projects}
    assert CORE_DISTRIBUTION in expected and TESTDIST_DISTRIBUTION in expected
    assert set(installed.wheels) == expected, sorted(w.path.name for w in installed.wheels.values())
    for wheel in installed.wheels.values():
        with zipfile.ZipFile(wheel.path) as zf:
            dist_infos = {n.split("/")[0] for n in zf.namelist() if ".dist-info/" in n}
            assert len(dist_infos) == 1, f"{wheel.path.name}: {dist_infos}"
            metadata = zf.read(f"{dist_infos.pop()}/METADATA").decode()
        assert canonical(re.search(r"(?m)^Name: (.+)$", metadata).group(1).strip()) == wheel.name
        assert re.search(r"(?m)^Version: (.+)$", metadata).group(1).strip() == wheel.version


def test_core_wheel_declares_the_cli_and_the_package(installed: Installed) -> None:
    core = installed.wheels[CORE_DISTRIBUTION]
    with zipfile.ZipFile(core.path) as zf:
        names = zf.namelist()
        entry_points = zf.read(f"zato_core-{core.version}.dist-info/entry_points.txt").decode()
    for module in ("zato/__init__.py", "zato/plugins.py", "zato/hookspecs.py", "zato/cli/__init__.py",
                   "zato/server/main.py", "zato/server/service/__init__.py"):
        assert module in names, f"{module} is missing from {core.path.name}"
    assert not [n for n in names if n.startswith(("core/", "tests/", "plugins/"))], "source-tree paths leaked into the wheel"
    assert re.search(r"(?m)^zato = zato\.cli:main$", entry_points), entry_points


def test_plugin_wheel_declares_its_entry_point(installed: Installed) -> None:
    wheel = installed.wheels[TESTDIST_DISTRIBUTION]
    with zipfile.ZipFile(wheel.path) as zf:
        entry_points = zf.read(f"zato_plugin_testdist-{wheel.version}.dist-info/entry_points.txt").decode()
        metadata = zf.read(f"zato_plugin_testdist-{wheel.version}.dist-info/METADATA").decode()
    assert f"[zato.plugins]\n{TESTDIST_PLUGIN} = {TESTDIST_MODULE}" in entry_points
    assert re.search(r"(?m)^Requires-Dist: zato-core\b", metadata), metadata


def test_pip_install_installs_the_plugin_and_the_core_from_dist(installed: Installed) -> None:
    dists = installed_distributions(installed)
    site_packages = {info["location"] for name, info in dists.items() if name in (CORE_DISTRIBUTION, TESTDIST_DISTRIBUTION)}
    for name in (CORE_DISTRIBUTION, TESTDIST_DISTRIBUTION):
        assert name in dists, f"{name} was not installed; pip said:\n{installed.install_output}"
        assert dists[name]["version"] == installed.wheels[name].version, \
            f"{name} {dists[name]['version']} was installed, but DIST holds {installed.wheels[name].path.name}"
    for location in site_packages:
        assert Path(location).resolve().is_relative_to(installed.venv.resolve()), location

    # The very files of the wheel in DIST, not a same-numbered release from an index.
    core = installed.wheels[CORE_DISTRIBUTION]
    location = Path(dists[CORE_DISTRIBUTION]["location"])
    with zipfile.ZipFile(core.path) as zf:
        for member in ("zato/__init__.py", "zato/plugins.py", "zato/cli/__init__.py"):
            assert (location / member).read_bytes() == zf.read(member), f"{member} differs from the one in {core.path.name}"

    # The core is imported from the venv, not from the source tree.
    result = run([installed.python, "-c", "import zato, zato_plugin_testdist; print(zato.__file__); "
                                          "print(zato_plugin_testdist.__file__)"], cwd=installed.work, timeout=60)
    for path in result.stdout.split():
        assert Path(path).resolve().is_relative_to(installed.venv.resolve()), path

    check = run([installed.python, "-m", "pip", "check"], cwd=installed.work, timeout=120, check=False)
    assert check.returncode == 0, f"pip check:\n{check.stdout}{check.stderr}"


def test_plugin_is_found_by_entry_point(installed: Installed) -> None:
    plugins = plugins_list(installed)
    assert TESTDIST_PLUGIN in plugins, f"not listed by `zato plugins list`: {sorted(plugins)}"
    row = plugins[TESTDIST_PLUGIN]
    assert row["distribution"] == TESTDIST_DISTRIBUTION
    assert row["version"] == installed.wheels[TESTDIST_DISTRIBUTION].version
    assert row["enabled"] is True and row["loaded"] is True and row["error"] == ""
    assert row["hooks"] == ["register_cli_commands", "register_internal_services"]
    assert row["registered"] == {"internal_services": ["zato_plugin_testdist.services"]}
    # The core's own plugins are there too, from the installed core.
    assert plugins["essentials"]["distribution"] == CORE_DISTRIBUTION
    assert plugins["essentials"]["version"] == installed.wheels[CORE_DISTRIBUTION].version


def test_plugin_adds_its_cli_command(installed: Installed) -> None:
    result = installed.run_zato("testdist-hello")
    assert result.stdout.strip() == TESTDIST_CLI_GREETING
    # Its --help comes from the plugin too. (Top-level `zato --help` is one of the CLI's "light"
    # commands that skip loading plugins, so it does not list plugin commands.)
    assert "Print a greeting from the testdist plugin." in installed.run_zato("testdist-hello", "--help").stdout


def test_plugin_switched_off_in_server_conf_is_not_imported(installed: Installed, tmp_path: Path) -> None:
    server_dir = quickstart(installed, tmp_path / "server")
    conf = (server_dir / "config" / "server.conf").read_text("utf-8")
    assert re.search(rf"(?m)^{TESTDIST_MODULE} = True$", conf), "quickstart did not list the installed plugin"
    assert plugins_list(installed, server_dir)[TESTDIST_PLUGIN]["enabled"] is True

    set_plugin_switch(server_dir, TESTDIST_MODULE, False)
    row = plugins_list(installed, server_dir)[TESTDIST_PLUGIN]
    assert row["distribution"] == TESTDIST_DISTRIBUTION
    assert row["enabled"] is False and row["loaded"] is False
    assert row["hooks"] == [] and row["registered"] == {} and row["error"] == ""

    # Nor are its CLI commands added when that server directory is being worked on.
    result = installed.run_zato("testdist-hello", server_dir, check=False)
    assert result.returncode != 0 and "No such command" in result.stderr, result.stdout + result.stderr


# ################################################################################################


def http(method: str, url: str, body: bytes | None = None, *, auth: tuple[str, str] | None = None,
         timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    if auth:
        request.add_header("authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until_answering(process: subprocess.Popen, server_dir: Path, log: Path) -> str:
    runtime_file = server_dir / "work" / "server.json"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        code = process.poll()
        if code is not None:
            pytest.fail(f"the server exited with {code} before answering:\n{log.read_text('utf-8', 'replace')}",
                        pytrace=False)
        try:
            info = json.loads(runtime_file.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("pid") == process.pid and info.get("address"):
            try:
                status, _ = http("GET", f"{info['address']}/zato/ping", timeout=2)
            except OSError:
                status = 0
            if status == 200:
                return info["address"]
        if time.monotonic() > deadline:
            pytest.fail(f"the server did not answer within {SERVER_START_TIMEOUT} s:\n"
                        f"{log.read_text('utf-8', 'replace')}", pytrace=False)
        time.sleep(0.1)


def stop(process: subprocess.Popen, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        pytest.fail(f"the server did not stop within {timeout} s of SIGTERM", pytrace=False)


def test_server_from_the_fresh_venv_runs_the_plugins_service(installed: Installed, tmp_path: Path) -> None:
    server_dir = quickstart(installed, tmp_path / "server")
    set_plugin_switch(server_dir, TESTDIST_MODULE, True)
    log = tmp_path / "server-output.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([str(installed.python), "-m", "zato.server.main", str(server_dir), "--fg"],
                                   cwd=installed.work, env=clean_env(), stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        address = wait_until_answering(process, server_dir, log)
        status, body = http("POST", f"{address}/zato/api/invoke/testdist.hello", json.dumps({"name": "wheel"}).encode(),
                            auth=("admin", ADMIN_PASSWORD))
        assert status == 200, body
        assert json.loads(body) == {"hello": "wheel", "plugin": "testdist"}

        status, body = http("POST", f"{address}/zato/api/invoke/testdist.hello", b"", auth=("admin", "wrong"))
        assert status == 401

        status, body = http("POST", f"{address}/zato/api/invoke/zato.service.get-list", b"", auth=("admin", ADMIN_PASSWORD))
        assert status == 200, body
        services = {s["name"]: s for s in json.loads(body)}
        assert services["testdist.hello"]["module"] == "zato_plugin_testdist.services"
        assert services["testdist.hello"]["is_internal"] is True
    finally:
        code = stop(process)
    assert code == 0, f"the server exited with {code} after SIGTERM:\n{log.read_text('utf-8', 'replace')}"
    assert not (server_dir / "work" / "server.json").exists()


# ################################################################################################
# A connector of this repository, installed the way its users install it


IBM_MQ_DISTRIBUTION = "zato-plugin-ibm-mq"


def test_pip_install_of_the_ibm_mq_plugin_brings_the_core_and_it_is_listed_off_until_switched_on(
        installed: Installed, tmp_path: Path) -> None:
    venv = tmp_path / "venv-ibm-mq"
    run([python311(), "-m", "venv", venv], cwd=installed.work, timeout=300)
    python, zato = venv / "bin" / "python", venv / "bin" / "zato"
    result = run([python, "-m", "pip", "install", "--find-links", installed.dist, IBM_MQ_DISTRIBUTION],
                 cwd=installed.work, timeout=INSTALL_TIMEOUT, check=False)
    if result.returncode != 0:
        if index_unreachable(result.stdout + result.stderr, {p.name for p in installed.projects}):
            index_problem(f"`pip install --find-links DIST {IBM_MQ_DISTRIBUTION}`", result)
        pytest.fail(f"`pip install --find-links DIST {IBM_MQ_DISTRIBUTION}` exited with {result.returncode}\n"
                    f"{result.stdout}\n{result.stderr}", pytrace=False)
    listing = run([python, "-c", "import json, importlib.metadata as m; print(json.dumps(sorted("
                                 "d.metadata['Name'].lower() for d in m.distributions())))"],
                  cwd=installed.work, timeout=60)
    names = {canonical(name) for name in json.loads(listing.stdout)}
    assert {CORE_DISTRIBUTION, IBM_MQ_DISTRIBUTION, "ibmmq"} <= names, sorted(names)

    def listed(*args: str | Path) -> dict:
        output = run([zato, "plugins", "list", *args, "--json"], cwd=installed.work, timeout=120).stdout
        return {row["name"]: row for row in json.loads(output)}["ibm_mq"]

    row = listed()
    assert row["distribution"] == IBM_MQ_DISTRIBUTION and row["version"] == installed.wheels[IBM_MQ_DISTRIBUTION].version
    assert row["enabled"] is False and row["loaded"] is False  # off until switched on, as in Zato
    server_dir = tmp_path / "server"
    run([zato, "quickstart", "create", server_dir, "--port", "0", "--admin-password", ADMIN_PASSWORD],
        cwd=installed.work, timeout=120)
    conf = server_dir / "config" / "server.conf"
    text = conf.read_text("utf-8")  # as the article says: ibm_mq = True in the [component_enabled] stanza
    if re.search(r"(?m)^\[component_enabled\]", text):
        text = re.sub(r"(?m)^\[component_enabled\][^\n]*\n", lambda m: m.group(0) + "ibm_mq = True\n", text, count=1)
    else:
        text += "\n[component_enabled]\nibm_mq = True\n"
    conf.write_text(text, "utf-8")
    row = listed(server_dir)
    assert row["enabled"] is True and row["loaded"] is True and row["error"] == "", row
    assert "register_channel_types" in row["hooks"] and "register_connectors" in row["hooks"]
