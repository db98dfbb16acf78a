""" Fixtures of the packaging tests: the core's wheel, built once per session and shared by
test_wheels.py and test_scaffold.py (building it is the slow part of both). """

from __future__ import annotations

import time

import pytest

from packaging_helpers import CORE_DISTRIBUTION, REPO_ROOT, Project, Wheel, build_wheels


@pytest.fixture(scope="session")
def core_wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    """ The wheel of zato-core built from this tree (`uv build --wheel`), in a directory of its
    own; `build_seconds` says how long that took. """
    base = tmp_path_factory.mktemp("core-wheel")
    dist, work = base / "dist", base / "work"
    dist.mkdir()
    work.mkdir()
    core = Project.read(REPO_ROOT)
    assert core.name == CORE_DISTRIBUTION, core
    started = time.perf_counter()
    build_wheels([core], dist, work, {core.name})
    [path] = dist.glob("*.whl")
    wheel = Wheel.parse(path)
    wheel.build_seconds = time.perf_counter() - started
    return wheel
