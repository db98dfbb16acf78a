""" `zato enclog genkey | open PATH | tailf PATH`.

Keys: `--key K` (repeatable; `--key '$NAME'` reads the environment variable NAME), `--key-env NAME`
(repeatable), or, with neither, a hidden prompt. Several keys: any of them decrypts (rotation).

Exit status: 0 every line read; 1 the key decrypts nothing (a wrong key); 2 a bad key or usage;
3 some lines held a truncated or corrupt token (each reported on stderr with its line number, the
rest decrypted).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import click

from zato_plugin_enclog.crypto import BadKey, Reader, genkey

ENV_REFERENCE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
WRONG_KEY, CORRUPT = 1, 3


def _keys(key: tuple[str, ...], key_env: tuple[str, ...]) -> list[str]:
    keys = []
    for value in key:
        match = ENV_REFERENCE.match(value.strip())
        keys.append(_env(match.group(1)) if match else value)
    keys.extend(_env(name) for name in key_env)
    if not keys:
        keys.append(click.prompt("Crypto key", hide_input=True))
    return keys


def _env(name: str) -> str:
    try:
        return os.environ[name]
    except KeyError:
        raise click.UsageError(f"environment variable {name} is not set (it should hold the key)") from None


def _reader(key: tuple[str, ...], key_env: tuple[str, ...]) -> Reader:
    try:
        return Reader(_keys(key, key_env))
    except BadKey as exc:
        raise click.UsageError(str(exc)) from None


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _problem(path: str, number: int, problem: str) -> None:
    sys.stderr.write(f"{path}:{number}: {problem}\n")
    sys.stderr.flush()


def _wrong_key(path: str) -> None:
    sys.stderr.write(f"error: wrong key: no line of {path} decrypts with the key given\n")
    sys.exit(WRONG_KEY)


key_options = [
    click.option("--key", "key", multiple=True, help="A Fernet key; '$NAME' reads it from the environment variable "
                                                     "NAME. Repeat for several keys (rotation)."),
    click.option("--key-env", "key_env", multiple=True, metavar="NAME",
                 help="The environment variable holding a key. Repeatable."),
]


def _with_keys(fn):
    for option in reversed(key_options):
        fn = option(fn)
    return fn


@click.group("enclog")
def enclog() -> None:
    """ Encrypted logs (Zato's enclog format): make a key, open or follow a log. """


@enclog.command("genkey")
def genkey_command() -> None:
    """ Print a new key (give it to the server as [enclog] key = $NAME). """
    _out(genkey())


@enclog.command("open")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@_with_keys
def open_command(path: str, key: tuple[str, ...], key_env: tuple[str, ...]) -> None:
    """ Print PATH decrypted. """
    reader = _reader(key, key_env)
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        lines = f.read().splitlines()
    results = [reader.line(text) for text in lines]
    if reader.decrypted == 0 and reader.wrong_key:
        _wrong_key(path)
    problems = 0
    for number, (text, problem) in enumerate(results, 1):
        if problem:
            problems += 1
            _problem(path, number, problem)
        else:
            _out(text)
    if problems:
        sys.exit(CORRUPT)


@enclog.command("tailf")
@click.argument("path", type=click.Path(dir_okay=False))
@_with_keys
@click.option("--interval", default=0.2, show_default=True, help="Seconds between two looks at the file.")
def tailf_command(path: str, key: tuple[str, ...], key_env: tuple[str, ...], interval: float) -> None:
    """ Print PATH decrypted from its start, then each line added to it, following it when it is
    replaced (rotated) or truncated, until interrupted. A line that does not decrypt is reported on
    stderr as PATH:LINE (line numbers start again at 1 in a new or truncated file). """
    reader = _reader(key, key_env)
    try:
        for number, text in follow(Path(path), interval):
            line, problem = reader.line(text)
            if problem:
                if reader.decrypted == 0 and reader.wrong_key:
                    _wrong_key(path)
                _problem(path, number, problem)
            else:
                _out(line)
    except KeyboardInterrupt:
        pass


def follow(path: Path, interval: float):
    """ (line number, line) for every line of `path`, then for each new one, for ever. The file is
    taken for a new one only when it is replaced (another inode: rotated; the old one is read to its
    end first) or truncated (smaller than what was read of it); it is then read from its start and
    line numbers start again at 1. A file growing while it is read is never read twice: what is
    found at a look is appended data, whenever it landed. """
    f = None
    inode = None
    pending = b""
    number = 0

    def lines(chunk: bytes):
        nonlocal pending, number
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            number += 1
            yield number, raw.decode("utf-8", "replace").rstrip("\r")

    while True:
        if f is None:
            try:
                f = open(path, "rb")
                inode = os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                time.sleep(interval)
                continue
            pending, number = b"", 0
        chunk = f.read()
        if chunk:
            yield from lines(chunk)
            continue
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            stat = None
        if stat is None or stat.st_ino != inode:  # replaced (rotated) or removed
            yield from lines(f.read())  # what was written to the old file before it was moved
            if pending:
                number += 1
                yield number, pending.decode("utf-8", "replace").rstrip("\r")
            f.close()
            f = None
            if stat is None:
                time.sleep(interval)
            continue
        if stat.st_size < f.tell():  # truncated: read it again from its start
            f.seek(0)
            pending, number = b"", 0
            continue
        time.sleep(interval)
