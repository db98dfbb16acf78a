""" File names, the pickup directory and saved copies: what hot deployment does on disk (pure
functions; the blocking ones run in worker threads). """

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import Collection

MAX_NAME_BYTES = 255

Signature = tuple[int, int, int, int, int, bool]  # what a scan sees of a file: a change changes it


class InvalidFileName(ValueError):
    """ A name that is not a plain deployable file name directly in the pickup directory. """


def check_file_name(name: str, suffixes: Collection[str] | None = ()) -> str:
    """ Returns `name` if it names a `.py` file directly in the pickup directory, or a file of
    one of `suffixes` (those plugins register, `zato.registry.DeployableFile`; None: any suffix,
    for a client that leaves the choice to the server); otherwise raises `InvalidFileName`
    saying why. Nothing with a path in it gets through, so no name can reach outside the pickup
    directory. """
    suffix = os.path.splitext(name)[1]
    problem = ""
    if not name:
        problem = "it is empty"
    elif "/" in name or "\\" in name:
        problem = "it holds a path separator (only files directly in the pickup directory are deployed)"
    elif ".." in name:
        problem = "it holds '..'"
    elif any(ord(char) < 32 or ord(char) == 127 for char in name):
        problem = "it holds control characters"
    elif len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        problem = f"it is longer than {MAX_NAME_BYTES} bytes"
    elif not suffix or name == suffix:
        problem = "it has no suffix such as .py"
    elif suffix != ".py" and suffixes is not None and suffix not in suffixes:
        problem = "only .py files hold services" + (
            f" (and {', '.join(sorted(suffixes))} files, which enabled plugins deploy)" if suffixes else "")
    if problem:
        raise InvalidFileName(f"{name!r} cannot be deployed: {problem}; use a plain file name such as my_services.py")
    return name


def is_deployable_name(name: str, suffixes: Collection[str] = ()) -> bool:
    try:
        check_file_name(name, suffixes)
    except InvalidFileName:
        return False
    return True


def escaping_target(pickup_dir: Path, path: Path) -> str | None:
    """ If `path` is a symbolic link pointing outside the pickup directory, where it points. """
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    root = Path(os.path.realpath(pickup_dir))
    return None if target != root and target.is_relative_to(root) else str(target)


def scan_pickup(pickup_dir: Path, suffixes: Collection[str] = ()) -> dict[str, Signature]:
    """ Every deployable regular file in the pickup directory (`.py`, and `suffixes`), with what
    identifies its version on disk (inode, size, modification and change times). Blocking: run
    it in a thread. """
    found: dict[str, Signature] = {}
    try:
        with os.scandir(pickup_dir) as entries:
            for entry in entries:
                if not is_deployable_name(entry.name, suffixes):
                    continue
                try:
                    info = entry.stat()  # follows a symbolic link; a dangling one (an editor's lock file) is skipped
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found[entry.name] = (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                                         entry.is_symlink())
    except FileNotFoundError:
        pass
    return found


def settled_changes(current: dict[str, Signature], pending: dict[str, Signature | None],
                    snapshot: dict[str, Signature]) -> list[tuple[str, Signature | None]]:
    """ Compares a new scan with what was acted on (`current`) and returns the changes that look
    the same as in the scan before (`pending`): (name, signature), signature None for a file that
    is gone. Updates `current` and `pending` in place. A change seen once only waits for the next
    scan: a file still being written keeps changing, and a file an editor deletes before writing
    it again is back by then. """
    settled: list[tuple[str, Signature | None]] = []
    for name in sorted(current.keys() | snapshot.keys() | pending.keys()):
        signature = snapshot.get(name)
        if current.get(name) == signature:
            pending.pop(name, None)
        elif name not in pending or pending[name] != signature:
            pending[name] = signature
        else:
            del pending[name]
            if signature is None:
                current.pop(name, None)
            else:
                current[name] = signature
            settled.append((name, signature))
    return settled


def write_atomically(path: Path, data: bytes) -> None:
    """ Writes a file so that readers see the old content or the new one, never a part. The
    temporary file's name does not end with .py, so the pickup directory's watcher skips it. """
    path.parent.mkdir(parents=True, exist_ok=True)
    # cut so that the temporary name, too, fits the file system's 255 bytes for a name of MAX_NAME_BYTES
    prefix = path.name.encode("utf-8", "surrogateescape")[:MAX_NAME_BYTES - 16].decode("utf-8", "ignore")
    temp = path.with_name(f".{prefix}.{secrets.token_hex(4)}.tmp")
    from zato.common.files import PRIVATE_FILE, opener
    try:
        with open(temp, "xb", opener=opener(PRIVATE_FILE)) as f:  # code: 0600 whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)  # replaces a symbolic link itself, never the file it points to
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def saved_names(deployed_dir: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(deployed_dir) if is_deployable_name(entry.name)}
    except FileNotFoundError:
        return set()
