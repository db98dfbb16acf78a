""" The published `zato-enclog` 1.0.7, unchanged, and zato-plugin-enclog reading each other's logs:
its `enclog open` reads what our formatter and our server wrote, our `zato enclog open` reads what
its formatter wrote, and the article's example prints the same line in both but for the token.

zato-enclog takes the `zato` package over in any environment it is installed in (its
`*-nspkg.pth`; see plugins/enclog/README.md), so it lives in a virtual environment of its own,
built from the package index like zato-client's (test_zato_client.py): cached, keyed by the recipe
and the interpreter, skipped when the index cannot be reached unless CI is set.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from test_zato_client import NETWORK_ERRORS, clean_env, on_ci

from zato.enclog import EncryptedLogFormatter, Reader, genkey

pytestmark = pytest.mark.slow

RECIPE: tuple[tuple[str, ...], ...] = (
    ("--no-deps", "zato-enclog==1.0.7", "click", "cryptography", "future", "tailer"),
    # what cryptography needs at run time and --no-deps leaves out (found by running `enclog`)
    ("--no-deps", "cffi", "pycparser"),
)
CHECK_IMPORT = "from zato.enclog import EncryptedLogFormatter, genkey, cli_main"
TOKEN = r"gAAAAA[A-Za-z0-9_\-=]+"
ARTICLE = '''
import logging, sys
from zato.enclog import EncryptedLogFormatter, genkey

level = logging.INFO
format = '%(levelname)s - %(message)s'

key = genkey()
formatter = EncryptedLogFormatter(key, format)

handler = logging.StreamHandler()
handler.setFormatter(formatter)

logger = logging.getLogger('')
logger.addHandler(handler)
logger.setLevel(level)

logger.info('This will be encrypted')
'''
WRITE = '''
import logging, sys
from zato.enclog import EncryptedLogFormatter
handler = logging.FileHandler(sys.argv[1])
handler.setFormatter(EncryptedLogFormatter(sys.argv[2].encode(), '%(asctime)s %(levelname)s %(name)s: %(message)s'))
log = logging.getLogger('theirs')
log.addHandler(handler)
log.setLevel(logging.INFO)
log.info('written by zato-enclog %s', 'for Jane Xi')
log.warning('{"user":"Jane Xi"}')
'''


def run(command, *, timeout=600, env=None):
    return subprocess.run([str(part) for part in command], env={**clean_env(), **(env or {})}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def install_failed(what, result):
    message = (f"building the zato-enclog environment failed at `{what}` (exit code {result.returncode})\n"
               f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}")
    unreachable = bool(NETWORK_ERRORS.search(result.stdout + result.stderr))
    if unreachable and not on_ci():
        pytest.skip(f"the package index seems unreachable; {message}")
    pytest.fail(("CI is set, so this is an error, not a skip: " if unreachable else "") + message, pytrace=False)


@pytest.fixture(scope="module")
def theirs(request) -> Path:
    """ The bin/ directory of a virtual environment holding zato-enclog 1.0.7 alone. """
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        cache_dir = Path(cache.mkdir("zato-enclog-venv"))
    else:
        cache_dir = Path(tempfile.gettempdir()) / "zato-compat-venvs" / "zato-enclog-venv"
        cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(json.dumps({"python": sys.version_info[:2], "recipe": RECIPE}).encode()).hexdigest()[:16]
    venv = cache_dir / key
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ok = (venv / "recipe-done").exists() and run([venv / "bin" / "python", "-I", "-c", CHECK_IMPORT]).returncode == 0
        if not ok:
            shutil.rmtree(venv, ignore_errors=True)
            result = run([sys.executable, "-m", "venv", venv], timeout=120)
            if result.returncode != 0:
                install_failed("python -m venv", result)
            for step in RECIPE:
                result = run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", *step])
                if result.returncode != 0:
                    install_failed("pip install " + " ".join(step), result)
            result = run([venv / "bin" / "python", "-I", "-c", CHECK_IMPORT])
            if result.returncode != 0:
                install_failed(f"python -c {CHECK_IMPORT!r}", result)
            (venv / "recipe-done").write_text(json.dumps(RECIPE))
    return venv / "bin"


def test_the_articles_example_prints_the_same_line_in_both_but_the_token(theirs):
    their_line = run([theirs / "python", "-I", "-c", ARTICLE]).stderr
    our_line = run([sys.executable, "-c", ARTICLE], env={"PATH": os.environ.get("PATH", "")}).stderr
    masked = [re.sub(TOKEN, "<token>", line) for line in (their_line, our_line)]
    assert masked[0] == masked[1] == "INFO - enclogdata:<token>\n"


def test_their_enclog_open_reads_what_our_formatter_and_server_wrote(theirs, tmp_path):
    import logging
    key = genkey()
    path = tmp_path / "ours.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(EncryptedLogFormatter(key, "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"))
    log = logging.getLogger("enclog.interop")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.info("written by us for %s", "Jane Xi")
    log.info('{"user":"Zażółć"}')
    handler.close()
    log.removeHandler(handler)
    result = run([theirs / "enclog", "open", path, "--key", key])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["written by us for Jane Xi", '{"user":"Zażółć"}']
    assert " INFO " in lines[0] and "enclog.interop" in lines[0]
    wrong = run([theirs / "enclog", "open", path, "--key", genkey()])
    assert wrong.returncode == 1 and "Invalid crypto key" in wrong.stderr


def test_our_zato_enclog_open_reads_what_their_formatter_wrote(theirs, tmp_path):
    key = genkey()
    path = tmp_path / "theirs.log"
    result = run([theirs / "python", "-I", "-c", WRITE, path, key])
    assert result.returncode == 0, result.stderr
    assert "Jane Xi" not in path.read_text()
    zato = Path(sys.executable).parent / "zato"
    ours = run([zato, "enclog", "open", path, "--key", key])
    assert ours.returncode == 0, ours.stderr
    assert [line.split(": ", 1)[1] for line in ours.stdout.splitlines()] == [
        "written by zato-enclog for Jane Xi", '{"user":"Jane Xi"}']
    reader = Reader(key)
    assert all(reader.line(line)[1] is None for line in path.read_text().splitlines())
    assert run([zato, "enclog", "open", path, "--key", genkey()]).returncode == 1
