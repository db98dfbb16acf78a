""" An external process for tests and benchmarks: start it, poll until it answers, stop it
(SIGTERM, then SIGKILL for the whole process tree). `ServerProcess` (a Zato server), the Redis
plugin's `RedisServer` and the benchmarks' servers are built on it.

    process = ExternalProcess(["redis-server", "--port", "6390"], name="redis-server", output=log_file)
    process.start()
    process.wait_until(lambda: answers_ping(6390), timeout=20)   # the first true value it returns
    ...
    process.stop()
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence


class ProcessExited(RuntimeError):
    """ The process exited while it was waited for; the message has its exit code and output. """


def children(pid: int) -> list[int]:
    """ The ids of the processes whose parent is `pid` (from /proc; [] where there is none). """
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    """ `pid` and its descendants, parents first. """
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children(current))
    return tree


class ExternalProcess:
    """ One process started from `command`. Its stdout and stderr go to the file `output` (a pipe
    nobody reads would fill up and block it), or nowhere when None; `log` is the file whose end
    errors show (the output file by default: some programs write their log elsewhere). """

    def __init__(self, command: Sequence[str], *, name: str, output: Path | str | None = None,
                 log: Path | str | None = None, cwd: Path | str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.command = [str(part) for part in command]
        self.name = name
        self.output_file = Path(output) if output is not None else None
        self.log_file = Path(log) if log is not None else self.output_file
        self.cwd = cwd
        self.env = env
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def start(self) -> "ExternalProcess":
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if self.output_file is None:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env)
            return self
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.output_file, "wb") as output:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=output,
                                            stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env)
        return self

    def wait_until(self, answers: Callable[[], Any], timeout: float, *, interval: float = 0.02) -> Any:
        """ Calls `answers()` every `interval` seconds until it returns a true value, and returns
        that. Raises `ProcessExited` if the process exits first, and `TimeoutError` (after
        stopping it) if `timeout` seconds pass; both messages end with its output. """
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise ProcessExited(f"{self.name} exited with {self.returncode}:\n{self.output()}")
            found = answers()
            if found:
                return found
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} did not answer within {timeout} s:\n{self.output()}")
            time.sleep(interval)

    def output(self, limit: int | None = None) -> str:
        """ What it wrote to its log so far (the last `limit` characters). """
        if self.log_file is None:
            return ""
        try:
            text = self.log_file.read_text("utf-8", "replace")
        except OSError:
            return ""
        return text[-limit:] if limit else text

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """ SIGTERM, and after `timeout` seconds SIGKILL for it and every process it started
        (a server's workers); returns the exit code (None if it was never started). """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in reversed(process_tree(process.pid)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                process.wait()
        return process.returncode

    def __enter__(self) -> "ExternalProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "not running" if self.process is None else f"exited {self.returncode}"
        return f"<ExternalProcess {self.name} pid {self.pid} {state}>"
