""" What the packaging tests share: running commands in a clean environment, building wheels
(`uv build --wheel`, or `pip wheel --no-deps` without uv) and telling an unreachable package
index (a skip, or a failure when `CI` is set) from a broken build. Used by test_wheels.py and
test_scaffold.py; conftest.py builds the core's wheel once per session for both. """

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE_DISTRIBUTION = "zato-core"

BUILD_TIMEOUT = 300
INSTALL_TIMEOUT = 900

# What pip and uv print when the package index cannot be reached.
NETWORK_ERRORS = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|Connection refused|ConnectTimeout|ReadTimeout|"
    r"ProxyError|Max retries exceeded|Could not fetch URL|SSLError|failed to fetch|dns error|"
    r"error sending request|Could not connect", re.IGNORECASE)
NO_MATCHING = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def clean_env(**extra: str) -> dict[str, str]:
    """ The environment for subprocesses: nothing that could make them import the development
    tree or the development virtual environment instead of what was installed. """
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE", "__PYVENV_LAUNCHER__")}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def run(command: list[str | Path], *, cwd: Path, timeout: float, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(c) for c in command]
    result = subprocess.run(command, cwd=cwd, env=env or clean_env(), stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` exited with {result.returncode}\n"
                    f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}", pytrace=False)
    return result


def index_unreachable(output: str, own_distributions: set[str]) -> bool:
    """ True if a failed pip/uv run failed because the package index could not be reached
    (rather than because one of our own wheels is missing or broken). """
    missing = {canonical(name) for name in NO_MATCHING.findall(output)}
    if missing & own_distributions:
        return False
    return bool(missing) or bool(NETWORK_ERRORS.search(output))


def index_problem(what: str, result: subprocess.CompletedProcess[str]) -> None:
    message = (f"{what} failed because the package index seems unreachable (exit code {result.returncode}); "
               f"dependencies such as trio must come from it.\n--- stdout ---\n{result.stdout[-4000:]}\n"
               f"--- stderr ---\n{result.stderr[-4000:]}")
    if on_ci():
        pytest.fail(f"CI is set, so this is an error, not a skip: {message}", pytrace=False)
    pytest.skip(message)



@dataclass
class Project:
    directory: Path
    name: str  # canonical distribution name

    @classmethod
    def read(cls, directory: Path) -> "Project":
        data = tomllib.loads((directory / "pyproject.toml").read_text("utf-8"))
        return cls(directory, canonical(data["project"]["name"]))


@dataclass
class Wheel:
    path: Path
    name: str  # canonical
    version: str
    build_seconds: float = 0.0  # how long building it took, where known

    @classmethod
    def parse(cls, path: Path) -> "Wheel":
        name, version = path.name[:-len(".whl")].split("-")[:2]
        return cls(path, canonical(name), version)


def python311() -> str:
    found = shutil.which("python3.11")
    if found is None:
        if sys.version_info[:2] == (3, 11):
            return sys.executable
        pytest.fail("python3.11 is not on PATH", pytrace=False)
    return found


def build_wheels(projects: list[Project], dist: Path, work: Path, own: set[str]) -> None:
    uv = shutil.which("uv")
    for project in projects:
        if uv:
            command = [uv, "build", "--wheel", "--out-dir", dist, "--python", python311(), "--no-progress",
                       project.directory]
            env = clean_env(UV_PYTHON_DOWNLOADS="never")
        else:
            command = [python311(), "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, project.directory]
            env = clean_env()
        before = set(dist.glob("*.whl"))
        result = run(command, cwd=work, timeout=BUILD_TIMEOUT, env=env, check=False)
        if result.returncode != 0 and index_unreachable(result.stdout + result.stderr, own):
            index_problem(f"building the wheel of {project.name}", result)
        if result.returncode != 0:
            pytest.fail(f"{project.name} ({project.directory}) does not build as a wheel: "
                        f"`{' '.join(map(str, command))}` exited with {result.returncode}\n"
                        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}", pytrace=False)
        new = [Wheel.parse(p) for p in set(dist.glob("*.whl")) - before]
        assert [w.name for w in new] == [project.name], \
            f"building {project.directory} should make one wheel named {project.name}, made {[w.path.name for w in new]}"
