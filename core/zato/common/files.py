""" Files and directories created with a given mode whatever the umask: what the server and the
CLI write that holds secrets or code (server.conf, the configuration database, work/*) is
readable by its owner alone, logs by the owner's group at most. """

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

logger = logging.getLogger("zato.files")

PRIVATE_FILE = 0o600  # server.conf, the configuration database, work/*, deployed code
PUBLIC_FILE = 0o644  # the pidfile: anyone may read it, only its owner write it
LOG_FILE = 0o640  # logs/server.log and its rotated files
PRIVATE_DIR = 0o700  # config/, work/
LOG_DIR = 0o750  # logs/
SHARED_DIR = 0o750  # the server directory, pickup/, lib/: the owner's group may read them


def create_file(path: Path | str, mode: int = PRIVATE_FILE, *, append: bool = False) -> BinaryIO:
    """ Opens `path` for writing (truncated, or `append`): a new file gets exactly `mode` (the
    umask neither widens nor narrows it), an existing one loses what `mode` does not allow. """
    return open(path, "ab" if append else "wb", opener=opener(mode))


def opener(mode: int) -> Callable[[str, int], int]:
    """ An `opener` for the built-in `open()` that creates files as `create_file` does:
    `open(path, "a", opener=opener(LOG_FILE))`. """
    def open_fd(path: str, flags: int) -> int:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
            created = True
        except FileExistsError:
            if flags & os.O_EXCL:  # open(path, "x")
                raise
            fd = os.open(path, flags & ~os.O_CREAT)
            created = False
        try:
            current = os.fstat(fd).st_mode & 0o777
            wanted = mode if created else current & mode
            if current != wanted:
                os.fchmod(fd, wanted)
                if not created:
                    _tightened(path, current, wanted)
        except BaseException:
            os.close(fd)
            raise
        return fd
    return open_fd


def write_file(path: Path | str, data: bytes | str, mode: int = PRIVATE_FILE) -> None:
    """ Replaces `path` atomically (readers see the old content or the new one) by a file of
    exactly `mode`. """
    path = Path(path)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # exactly `mode`, whatever the umask
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def tighten(path: Path | str, mode: int, *, quiet: bool = False) -> bool:
    """ Removes from an existing file's or directory's mode what `mode` does not allow (a 0644
    file and 0600 give 0600; a 0600 file and 0640 stay 0600) and logs it unless `quiet` (a log
    handler opening its file must not log). True if it changed; a missing file is left alone. """
    try:
        current = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return False
    if current & ~mode:
        os.chmod(path, current & mode)
        if not quiet:
            _tightened(path, current, current & mode)
        return True
    return False


def make_dir(path: Path | str, mode: int = PRIVATE_DIR) -> Path:
    """ Creates a directory (and its parents) with exactly `mode`; an existing one is left as it is. """
    path = Path(path)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    return path


def _tightened(path: Path | str, before: int, after: int) -> None:
    logger.warning("%s had mode %04o, more open than it should be; its mode is now %04o", path, before, after)
