""" The author's path of `zato plugin new`, end to end, as a new author takes it: in a fresh
virtual environment with the core's wheel, `zato plugin new demo --kind both` writes
zato-plugin-demo, `pip install -e 'zato-plugin-demo[test]'` installs it with its test extra, its
own tests (the conformance suites against its test peer) pass with pytest, its benchmark runs,
and it builds as a wheel that declares its entry point. Each step's seconds are printed (`-rP`
shows them) and the whole path must stay well within the 15 minutes the issue gives an author.
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path

import pytest

from packaging_helpers import (
    INSTALL_TIMEOUT, Project, Wheel, build_wheels, canonical, index_problem, index_unreachable, python311, run,
)

pytestmark = pytest.mark.slow

NAME = "demo"
DISTRIBUTION = "zato-plugin-demo"
PACKAGE = "zato_plugin_demo"
GENERATED_TESTS = 17  # outgoing: 7 conformance + 2 (services, a wrong token); channel: 8 conformance
TESTS_TIMEOUT = 600
AUTHOR_BUDGET = 15 * 60


def pip_install(python: Path, *args: str | Path, cwd: Path, dist: Path, own: set[str], what: str) -> None:
    result = run([python, "-m", "pip", "install", "--find-links", dist, *args], cwd=cwd, timeout=INSTALL_TIMEOUT,
                 check=False)
    if result.returncode != 0:
        if index_unreachable(result.stdout + result.stderr, own):
            index_problem(what, result)
        pytest.fail(f"{what} exited with {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n"
                    f"{result.stderr}", pytrace=False)


def test_a_new_plugin_installs_passes_its_own_tests_and_builds(core_wheel: Wheel, tmp_path: Path) -> None:
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    dist.mkdir()
    work.mkdir()
    (dist / core_wheel.path.name).write_bytes(core_wheel.path.read_bytes())
    python, zato = venv / "bin" / "python", venv / "bin" / "zato"
    own = {core_wheel.name, DISTRIBUTION}
    seconds: dict[str, float] = {"build the core's wheel (once per session)": core_wheel.build_seconds}

    def step(what: str, started: float) -> None:
        seconds[what] = time.perf_counter() - started

    started = time.perf_counter()
    run([python311(), "-m", "venv", venv], cwd=work, timeout=300)
    pip_install(python, "zato-core", cwd=work, dist=dist, own=own, what="pip install --find-links DIST zato-core")
    step("a fresh venv with the core", started)

    started = time.perf_counter()
    written = run([zato, "plugin", "new", NAME, "--kind", "both"], cwd=work, timeout=120)
    step("zato plugin new demo --kind both", started)
    plugin = work / DISTRIBUTION
    assert (plugin / "pyproject.toml").is_file(), written.stdout + written.stderr
    assert f"Wrote {DISTRIBUTION}" in written.stdout

    refused = run([zato, "plugin", "new", NAME], cwd=work, timeout=120, check=False)
    assert refused.returncode == 2 and "not empty" in refused.stderr, refused.stdout + refused.stderr

    started = time.perf_counter()
    pip_install(python, "-e", f"{plugin}[test]", cwd=work, dist=dist, own=own,
                what=f"pip install -e '{DISTRIBUTION}[test]'")
    step("pip install -e 'zato-plugin-demo[test]'", started)

    # Installed, it is taken: a second plugin of that name is refused, naming the distribution
    clash = run([zato, "plugin", "new", NAME, "--dir", work / "again"], cwd=work, timeout=120, check=False)
    assert clash.returncode == 2 and DISTRIBUTION in clash.stderr, clash.stdout + clash.stderr
    assert not (work / "again").exists()

    # The server finds it, and its README's tables are those the core generates from its schema
    listed = {row["name"]: row for row in json.loads(run([zato, "plugins", "list", "--json"], cwd=work,
                                                          timeout=120).stdout)}
    row = listed[NAME]
    assert row["distribution"] == DISTRIBUTION and row["loaded"] is True and row["error"] == "", row
    assert {"register_connectors", "register_object_types", "register_channel_types",
            "register_request_attributes"} <= set(row["hooks"]), row
    tables = run([python, "-m", "zato.field_tables", "--check", "README.md"], cwd=plugin, timeout=120, check=False)
    assert tables.returncode == 0, tables.stdout + tables.stderr

    started = time.perf_counter()
    tests = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=plugin, timeout=TESTS_TIMEOUT,
                check=False)
    step("pytest (the generated tests)", started)
    output = tests.stdout + tests.stderr
    assert tests.returncode == 0, output
    summary = tests.stdout.strip().splitlines()[-1]
    assert re.search(rf"\b{GENERATED_TESTS} passed\b", summary) and not re.search(r"skipped|failed|error", summary), \
        output
    # ... with the plugin and the core of the venv, not of the source tree
    where = run([python, "-c", f"import zato, {PACKAGE}; print(zato.__file__); print({PACKAGE}.__file__)"],
                cwd=work, timeout=60).stdout.split()
    assert Path(where[0]).resolve().is_relative_to(venv.resolve()), where
    assert Path(where[1]).resolve().is_relative_to(plugin.resolve()), where

    started = time.perf_counter()
    bench = run([python, plugin / "bench" / f"bench_{NAME}.py", "--calls", "20", "--rounds", "1"], cwd=plugin,
                timeout=120)
    step("the benchmark (20 calls, 1 round)", started)
    assert len(re.findall(r"ratio +\d+\.\d+", bench.stdout)) == 4, bench.stdout  # 2 kinds x 2 baselines

    started = time.perf_counter()
    plugin_dist = tmp_path / "plugin-dist"
    plugin_dist.mkdir()
    build_wheels([Project.read(plugin)], plugin_dist, work, own)
    step("build the plugin's wheel", started)
    [wheel_path] = plugin_dist.glob("*.whl")
    wheel = Wheel.parse(wheel_path)
    assert wheel.name == canonical(DISTRIBUTION)
    with zipfile.ZipFile(wheel_path) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"{PACKAGE}-{wheel.version}.dist-info/entry_points.txt").decode()
    assert f"[zato.plugins]\n{NAME} = {PACKAGE}" in entry_points, entry_points
    for module in ("__init__", "objects", "http_api", "connection", "channel", "testing"):
        assert f"{PACKAGE}/{module}.py" in names, sorted(names)

    author_path = sum(value for what, value in seconds.items() if "core's wheel" not in what)
    print("\n".join(f"{value:7.1f} s  {what}" for what, value in seconds.items()))
    print(f"{author_path:7.1f} s  the author's path: venv with the core, new, install, tests, bench, wheel")
    assert author_path < AUTHOR_BUDGET
