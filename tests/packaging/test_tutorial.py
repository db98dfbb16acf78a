""" docs/writing-plugins.md, run as written, so that the tutorial cannot go stale: every command
it shows runs in order, in a home directory of its own with a fresh virtual environment and the
core's wheel, and prints what the tutorial says it prints; every file it has the reader write is
written, and every patch it has the reader apply is applied with `git apply`.

How the tutorial is read (write new steps the same way):

* A ```console block holds commands, each on a line starting with `$ `, each followed by the
  output it prints (stdout and stderr together). In an output line `[...]` stands for any text
  (timings, ports, passwords); a line `...` alone stands for any number of lines.
* `$ cd DIR` changes the directory of the commands after it, `$ . VENV/bin/activate` activates
  the virtual environment for them; a command ending in ` &` runs in the background until the
  end of the tutorial, and the output shown under it is waited for (its first lines).
* A fenced block right after `<!-- write: PATH -->` is written to PATH (relative to the current
  directory); a ```diff block right after `<!-- apply -->` is applied with `git apply`.
* The reader's home is `/home/you`, the ports are 17010 (the server) and 18080 (the shop API);
  the test gives each a real value (a temporary directory, free ports) and maps them back in the
  output it compares. `pip install zato-core` installs the wheel built from this tree.

`python tests/packaging/test_tutorial.py --record` runs the tutorial the same way and prints what
each command printed, to update the tutorial after a change of output.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from packaging_helpers import (  # noqa: E402
    REPO_ROOT, Wheel, clean_env, index_problem, index_unreachable, python311,
)

pytestmark = pytest.mark.slow

TUTORIAL = REPO_ROOT / "docs" / "writing-plugins.md"
READER_HOME = "/home/you"
SERVER_PORT, API_PORT = "17010", "18080"
COMMAND_TIMEOUT = 900
BACKGROUND_WAIT = 60

BLOCK = re.compile(r"^(?:<!-- (?P<directive>[^\n]*?) -->\n)?```(?P<info>[\w-]*)\n(?P<body>.*?)^```[ \t]*$",
                   re.MULTILINE | re.DOTALL)


# ################################################################################################
# What the tutorial says


@dataclass
class Command:
    line: int
    command: str
    expected: list[str] = field(default_factory=list)

    @property
    def background(self) -> bool:
        return self.command.endswith(" &")


@dataclass
class WriteFile:
    line: int
    path: str
    content: str


@dataclass
class Patch:
    line: int
    content: str


def read_tutorial(text: str) -> list[Command | WriteFile | Patch]:
    steps: list[Command | WriteFile | Patch] = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("body")) + 1
        directive, info, body = (match.group("directive") or "").strip(), match.group("info"), match.group("body")
        if directive.startswith("write:"):
            steps.append(WriteFile(line, directive.removeprefix("write:").strip(), body))
        elif directive == "apply":
            assert info == "diff", f"{TUTORIAL.name}:{line}: <!-- apply --> goes before a ```diff block"
            steps.append(Patch(line, body))
        elif info == "console":
            for number, text_line in enumerate(body.splitlines()):
                if text_line.startswith("$ "):
                    steps.append(Command(line + number, text_line[2:].strip()))
                else:
                    assert steps and isinstance(steps[-1], Command), \
                        f"{TUTORIAL.name}:{line + number}: output before any command in a console block"
                    steps[-1].expected.append(text_line.rstrip())
    return steps


def output_pattern(expected: list[str]) -> re.Pattern[str]:
    """ The output lines as one pattern: `...` any lines, `[...]` any text within a line. """
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*".join(re.escape(piece) for piece in line.split("[...]")) + r"\n")
    return re.compile("".join(parts))


def matches(expected: list[str], output: str, prefix_only: bool = False) -> bool:
    lines = [line.rstrip() for line in output.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    text = "".join(line + "\n" for line in lines)
    pattern = output_pattern(expected)
    return bool(pattern.match(text) if prefix_only else pattern.fullmatch(text))


# ################################################################################################
# Running it


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


class Reader:
    """ Takes the tutorial's steps in a home directory of its own. """

    def __init__(self, home: Path, wheel: Wheel, record: bool = False) -> None:
        self.home = home
        self.cwd = home
        self.record = record
        self.ports = {SERVER_PORT: free_port(), API_PORT: free_port()}
        constraints = home.parent / "constraints.txt"
        constraints.write_text(f"{wheel.name}=={wheel.version}\n")  # the core from the wheel, never the index
        self.env = clean_env(HOME=str(home), PIP_FIND_LINKS=str(wheel.path.parent), PIP_CONSTRAINT=str(constraints),
                             PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore", COLUMNS="1000", NO_COLOR="1", TERM="dumb",
                             PYTHONUNBUFFERED="1")
        self.background: list[tuple[subprocess.Popen, Path]] = []
        self.servers: list[Path] = []

    def real(self, text: str) -> str:
        """ The reader's text with this run's home and ports. """
        text = text.replace(READER_HOME, str(self.home)).replace("python3.11 ", f"{python311()} ")
        for port, real_port in self.ports.items():
            text = text.replace(port, real_port)
        return text

    def as_the_reader_sees_it(self, output: str) -> str:
        output = output.replace(str(self.home), READER_HOME)
        for port, real_port in self.ports.items():
            output = output.replace(real_port, port)
        return output

    def expand(self, path: str) -> Path:
        """ A path as the reader's shell reads it: `~` is the reader's home, relative to the current directory. """
        path = self.real(path)
        if path == "~" or path.startswith("~/"):
            path = str(self.home) + path[1:]
        return (self.cwd / path).resolve()

    def take(self, step: Command | WriteFile | Patch) -> None:
        where = f"{TUTORIAL.name}:{step.line}"
        if isinstance(step, WriteFile):
            target = self.expand(step.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self.real(step.content))
            return
        if isinstance(step, Patch):
            result = subprocess.run(["git", "apply", "--verbose", "-"], input=self.real(step.content), cwd=self.cwd,
                                    env=self.env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, f"{where}: the patch does not apply in {self.cwd}:\n{result.stderr}"
            return
        command = self.real(step.command)
        words = shlex.split(command) if not step.background else []
        if words[:1] == ["cd"]:
            self.cwd = self.expand(words[1] if len(words) > 1 else "~")
            self.check(step, "")
            return
        if len(words) == 2 and words[0] in (".", "source") and words[1].endswith("/bin/activate"):
            venv = self.expand(words[1]).parent.parent
            self.env = {**self.env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{self.env['PATH']}"}
            self.check(step, "")
            return
        if words[:2] == ["zato", "start"]:
            self.servers.append(self.expand(words[2]))
        if step.background:
            self.run_in_background(step, command.removesuffix("&").strip())
            return
        result = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT)
        output = self.as_the_reader_sees_it(result.stdout)
        if result.returncode != 0 and not self.record:
            if index_unreachable(output, {"zato-core", "zato-plugin-shop"}):
                index_problem(f"{where}: `{step.command}`", result)
            pytest.fail(f"{where}: `{step.command}` exited with {result.returncode}:\n{output}", pytrace=False)
        self.check(step, output)

    def run_in_background(self, step: Command, command: str) -> None:
        log = self.home.parent / f"background-{len(self.background)}.log"
        process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.cwd, env=self.env,
                                   stdin=subprocess.DEVNULL, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.background.append((process, log))
        deadline = time.monotonic() + BACKGROUND_WAIT
        while True:
            output = self.as_the_reader_sees_it(log.read_text())
            if matches(step.expected, output, prefix_only=True) or self.record and output:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{TUTORIAL.name}:{step.line}: `{step.command}` did not print what the tutorial "
                            f"shows within {BACKGROUND_WAIT} s:\n{output}", pytrace=False)
            time.sleep(0.1)
        if self.record:
            print(f"$ {step.command}\n{output}", end="")

    def check(self, step: Command, output: str) -> None:
        if self.record:
            print(f"$ {step.command}\n{output}", end="")
            return
        shown = "\n".join(step.expected)
        assert matches(step.expected, output), (
            f"{TUTORIAL.name}:{step.line}: `{step.command}` printed what the tutorial does not show.\n"
            f"--- the tutorial shows ---\n{shown}\n--- it printed ---\n{output}")

    def close(self) -> None:
        for server_dir in reversed(self.servers):  # stopped by the tutorial unless a step failed first
            subprocess.run(["bash", "-c", f"zato stop {shlex.quote(str(server_dir))}"], cwd=self.home,
                           env=self.env, capture_output=True, timeout=60)
        for process, _ in reversed(self.background):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def take_the_tutorial(home: Path, wheel: Wheel, record: bool = False) -> list[Command | WriteFile | Patch]:
    steps = read_tutorial(TUTORIAL.read_text("utf-8"))
    reader = Reader(home, wheel, record)
    try:
        for step in steps:
            reader.take(step)
    finally:
        reader.close()
    return steps


# ################################################################################################


def test_the_reading_of_the_tutorial_can_fail():
    """ The matching itself: wildcards match what they stand for and nothing else. """
    assert matches(["a [...] c", "...", "end"], "a b c\nx\ny\nend\n")
    assert matches(["a [...] c", "...", "end"], "a  c\nend")
    assert not matches(["a [...] c", "end"], "a b c\nx\nend\n")
    assert not matches(["only this"], "only this\nand more\n")
    assert matches(["first"], "first\nthen more\n", prefix_only=True)
    steps = read_tutorial("text\n```console\n$ echo hi\nhi\n$ cd x\n```\n<!-- write: f.txt -->\n```text\nbody\n```\n"
                          "<!-- apply -->\n```diff\n--- a/f\n+++ b/f\n```\n")
    assert [type(step).__name__ for step in steps] == ["Command", "Command", "WriteFile", "Patch"]
    assert steps[0].expected == ["hi"] and steps[2].path == "f.txt" and steps[2].content == "body\n"


def test_the_tutorial_runs_as_written(core_wheel: Wheel, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    steps = take_the_tutorial(home, core_wheel)
    commands = [step.command for step in steps if isinstance(step, Command)]
    # what the tutorial is about, so that a rewrite keeps it a tutorial of the whole path
    for needed in ("zato plugin new shop", "pytest", "zato plugin check shop", "pip wheel", "zato start"):
        assert any(command.startswith(needed) for command in commands), f"the tutorial no longer runs {needed}"
    assert any(isinstance(step, Patch) for step in steps) and any(isinstance(step, WriteFile) for step in steps)


if __name__ == "__main__":  # --record: print what each command prints
    import tempfile

    wheels = Path(tempfile.mkdtemp(prefix="tutorial-wheel-"))
    subprocess.run(["uv", "build", "--wheel", "-o", str(wheels), str(REPO_ROOT)], check=True, capture_output=True)
    [built] = wheels.glob("zato_core-*.whl")
    with tempfile.TemporaryDirectory(prefix="tutorial-") as base:
        (Path(base) / "home").mkdir()
        take_the_tutorial(Path(base) / "home", Wheel.parse(built), record="--record" in sys.argv)
