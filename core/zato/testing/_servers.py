""" Starting servers for tests: in-process (`run_server`) or as a real process (`ServerProcess`). """

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import trio

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-test-password"


def admin_auth() -> tuple[str, str]:
    return ADMIN_USER, ADMIN_PASSWORD


def create_test_server_dir(base_dir: Path | str, *, workers: int = 1, **config: dict[str, Any]) -> Path:
    """ A quickstart server directory listening on a free port (port 0), with the admin password
    `ADMIN_PASSWORD`. `config` sets server.conf values: `main={"graceful_timeout": 2}`. """
    from zato.cli.quickstart import create_server_dir
    paths = create_server_dir(base_dir, port=0, workers=workers, admin_password=ADMIN_PASSWORD)
    for section, values in config.items():
        for key, value in values.items():
            set_config_value(paths.base_dir, section, key, value)
    return paths.base_dir


def set_config_value(base_dir: Path | str, section: str, key: str, value: Any) -> None:
    """ Sets one server.conf value, keeping every other line (and comment) as it is. """
    path = Path(base_dir) / "config" / "server.conf"
    lines = path.read_text("utf-8").splitlines()
    out, current, done = [], None, False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if current == section and not done:
                out.append(f"{key} = {value}")
                done = True
            current = stripped[1:-1]
        elif current == section and not done and stripped.split("=", 1)[0].strip() == key and "=" in stripped:
            out.append(f"{key} = {value}")
            done = True
            continue
        out.append(line)
    if not done:
        if current != section:
            out.append(f"[{section}]")
        out.append(f"{key} = {value}")
    path.write_text("\n".join(out) + "\n", "utf-8")
    configparser.ConfigParser(interpolation=None).read(path)  # still valid INI


@asynccontextmanager
async def run_server(base_dir: Path | str, options: Any = None) -> AsyncIterator[Any]:
    """ Runs a server in this trio run; yields the `Server` once it answers HTTP (its
    `address` attribute), stops it gracefully on exit. A start-up error (bad config, broken
    plugin, failing start-up callable) is raised as itself. """
    from zato.server.main import known_error
    from zato.server.server import serve_worker
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_worker, base_dir, options)
            try:
                yield server
            finally:
                server.request_shutdown()
    except BaseExceptionGroup as group:
        error = known_error(group)  # a start-up error is raised as itself, not inside a group
        if error is None:
            raise
        raise error from None


class ServerProcess:
    """ A server started as a real process (`python -m zato.server.main DIR --fg`). """

    def __init__(self, base_dir: Path | str, *args: str, env: dict[str, str] | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.address = ""

    def start(self, timeout: float = 30.0, wait: bool = True) -> "ServerProcess":
        runtime = self.base_dir / "work" / "server.json"
        runtime.unlink(missing_ok=True)
        # Console output goes to a file: a pipe nobody reads fills up and blocks the server.
        self.console_file = self.base_dir / "logs" / "console.log"
        self.console_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.console_file, "wb") as console:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "zato.server.main", str(self.base_dir), "--fg", *self.args],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, env=self.env)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> str:
        runtime = self.base_dir / "work" / "server.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                info = json.loads(runtime.read_text())
                if info["pid"] == self.process.pid and _ping(info["address"]):
                    self.address = info["address"]
                    return self.address
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"server did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        """ What the server printed to its console so far. """
        try:
            return self.console_file.read_text("utf-8", "replace")
        except (AttributeError, OSError):
            return ""

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _ping(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"{address}/zato/ping", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
