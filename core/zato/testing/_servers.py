""" Starting servers for tests: in-process (`run_server`) or as a real process (`ServerProcess`). """

from __future__ import annotations

import configparser
import json
import os
import sys
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import trio

from zato.testing._process import ExternalProcess

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


class ServerProcess(ExternalProcess):
    """ A server started as a real process (`python -m zato.server.main DIR --fg`), its console
    output in logs/console.log. `start()` waits until GET /zato/ping answers (`address`); an exit
    before that raises `ProcessExited` (a RuntimeError), no answer in time `TimeoutError`, both
    with what the server printed. """

    def __init__(self, base_dir: Path | str, *args: str, env: dict[str, str] | None = None) -> None:
        self.base_dir = Path(base_dir)
        self.args = args
        self.console_file = self.base_dir / "logs" / "console.log"
        super().__init__([sys.executable, "-m", "zato.server.main", str(self.base_dir), "--fg", *args],
                         name="server", output=self.console_file, env={**os.environ, **(env or {})})
        self.address = ""

    def start(self, timeout: float = 30.0, wait: bool = True) -> "ServerProcess":
        (self.base_dir / "work" / "server.json").unlink(missing_ok=True)
        super().start()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> str:
        self.address = self.wait_until(self._answering_address, timeout)
        return self.address

    def _answering_address(self) -> str | None:
        try:
            info = json.loads((self.base_dir / "work" / "server.json").read_text())
            if info["pid"] == self.process.pid and ping_server(info["address"]):
                return info["address"]
        except (OSError, ValueError, KeyError):
            pass
        return None

    def wait(self, timeout: float | None = 30.0) -> int:
        return super().wait(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        code = super().stop(timeout)
        return 0 if code is None else code


def ping_server(address: str) -> bool:
    """ True if the server at `address` (http://host:port) answers GET /zato/ping with 200. """
    try:
        with urllib.request.urlopen(f"{address}/zato/ping", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
