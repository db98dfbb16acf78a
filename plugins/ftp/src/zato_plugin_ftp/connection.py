""" One FTP or FTPS outgoing connection: what `self.outgoing.ftp.get(name)` (and `self.out.ftp[name]`)
is, with pyfilesystem2's FTPFS method names on the standard library's ftplib.

    conn = self.outgoing.ftp.get("My FTP")
    for name in conn.listdir("/"):                        # in a plain `def handle` (a worker thread)
        data = conn.getbytes(name)
    names = await conn.run(lambda conn: conn.listdir("/"))  # in an `async def handle`

* A pool of up to `pool_size` control connections (logged in, each used by one thread at a time),
  opened on first use and kept between calls. A call waits for a free one when all are busy.
* A control connection the server dropped (EOF, a reset, a `421` reply) is closed and replaced;
  a call that was safe to repeat (a read, a listing, a rename, a delete) is then tried once more
  on the new one. A transfer that had already sent or received data is not repeated.
* Relative paths are relative to `default_directory` (the login directory if that is empty);
  absolute paths are the server's own.
* Every failure is an `FTPError` (an `OutgoingError`) naming the connection, the operation, the
  path and the server's reply; a missing file or directory is `ResourceNotFound`.
"""

from __future__ import annotations

import ftplib
import io
import logging
import posixpath
import socket
import ssl
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any, BinaryIO, Callable, Iterator, Mapping

from zato.plugin_api import BlockingCalls, OutgoingError, as_bool, client_tls_context, secret_call, setting_number

logger = logging.getLogger("zato.outgoing.ftp")

TLS_NONE, TLS_EXPLICIT = "none", "explicit"
TLS_MODES = (TLS_NONE, TLS_EXPLICIT)
DEFAULT_PORT = 21
DEFAULT_TIMEOUT = 10.0
DEFAULT_POOL_SIZE = 5
POOL_WAIT = 60.0  # seconds a call waits for a free control connection before it fails
RUN_THREADS = 20  # worker threads one connection's run() may use at once (async services)
CHUNK_SIZE = 64 * 1024  # bytes per block of download() and upload()

# What a dropped control connection looks like to ftplib
DROPPED = (EOFError, ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)


class FTPError(OutgoingError):
    """ An FTP operation failed: the message names the connection, the operation, the path and
    the server's reply (`reply`, e.g. "550 No such file or directory."; empty if there was none). """

    def __init__(self, message: str, reply: str = "") -> None:
        super().__init__(message)
        self.reply = reply


class ResourceNotFound(FTPError):
    """ The file or directory does not exist (pyfilesystem2's `fs.errors.ResourceNotFound`). """


class DirectoryExists(FTPError):
    """ makedir() of a directory that exists already (pyfilesystem2's name). """


class DestinationExists(FTPError):
    """ move() onto a path that exists, without overwrite=True (pyfilesystem2's name). """


@dataclass(frozen=True)
class Info:
    """ What getinfo() says about a path (pyfilesystem2's Info, flattened). """
    name: str
    is_dir: bool
    size: int | None  # bytes; None for a directory or when the server does not say
    modified: datetime | None  # UTC; None when the server does not say
    raw: dict[str, str] = field(default_factory=dict)  # the MLST facts, as the server gave them

    @property
    def is_file(self) -> bool:
        return not self.is_dir


class _Retry(Exception):
    """ The control connection was dropped before anything was done: try again on a new one. """


class FTPConnection:
    """ An outgoing FTP connection built from an `outgoing_ftp` definition (its fields:
    `zato_plugin_ftp.OUTGOING_FTP`). Never logs the password. """

    def __init__(self, server: Any, definition: Mapping[str, Any]) -> None:
        self.name = str(definition["name"])
        self.host = str(definition.get("host") or "").strip()
        if not self.host:
            raise ValueError("host is empty; set it to the FTP server's host name or address")
        self.port = setting_number(definition, "port", int, DEFAULT_PORT, check=lambda v: 0 < v < 65536,
                                   expected="a TCP port (1-65535)")
        self.timeout = setting_number(definition, "timeout", float, DEFAULT_TIMEOUT, check=lambda v: v > 0,
                                      expected="a number of seconds above 0")
        self.pool_size = setting_number(definition, "pool_size", int, DEFAULT_POOL_SIZE, check=lambda v: v >= 1,
                                        expected="1 or more")
        self.user = str(definition.get("user") or "") or "anonymous"
        self._password = str(definition.get("password") or "")
        self.acct = str(definition.get("acct") or "")
        self.dircache = _flag(definition, "dircache", False)  # accepted from Zato; every call asks the server
        self.default_directory = str(definition.get("default_directory") or "").strip()
        self.passive = _flag(definition, "passive", True)
        self.tls = str(definition.get("tls") or TLS_NONE).strip().lower()
        if self.tls not in TLS_MODES:
            raise ValueError(f"tls {self.tls!r} is not one of {', '.join(TLS_MODES)} (none: plain FTP, explicit: "
                             f"FTPS with AUTH TLS and a protected data channel)")
        self.tls_verify = _flag(definition, "tls_verify", True)
        self.tls_ca_file = str(definition.get("tls_ca_file") or "").strip() or None
        self._tls_context = client_tls_context(verify=self.tls_verify, ca_file=self.tls_ca_file, peer="FTP") \
            if self.tls == TLS_EXPLICIT else None
        if self.tls == TLS_NONE and self._password and self.user != "anonymous":
            logger.warning("outgoing ftp %r: tls is none, so the password of %r crosses the network in clear; set "
                           "tls to explicit if the server offers AUTH TLS", self.name, self.user)

        self.closed = False
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.pool_size)  # one per control connection in use
        self._idle: list[ftplib.FTP] = []  # logged in, not in use
        self._busy: set[ftplib.FTP] = set()
        self._mlst: bool | None = None  # whether the server offers MLST/MLSD (FEAT), learnt on first login
        self._calls = BlockingCalls(f"outgoing ftp {self.name!r}", threads=RUN_THREADS)

    @property
    def address(self) -> str:
        return f"{'ftps' if self.tls == TLS_EXPLICIT else 'ftp'}://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"<FTPConnection {self.name!r} {self.address}{' closed' if self.closed else ''}>"

    # ############################################################################################
    # For services

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """ For `async def` services: `names = await conn.run(lambda conn: conn.listdir("/"))`.
        `fn(conn, *args)` runs in a worker thread (at most RUN_THREADS of this connection's at once);
        its result or exception comes back. From a plain `def handle` it calls `fn` at once. """
        return self._calls.call(partial(fn, self, *args))

    def listdir(self, path: str = ".") -> list[str]:
        """ Names (not paths) of what the directory holds, without `.` and `..`. """
        def list_names(ftp: ftplib.FTP) -> list[str]:
            full = self._path(path)
            if self._uses_mlst(ftp):
                names = [name for name, facts in ftp.mlsd(full)
                         if facts.get("type", "").lower() not in ("cdir", "pdir") and name not in (".", "..")]
            else:
                names = [posixpath.basename(name.rstrip("/")) for name in ftp.nlst(full)]
                names = [name for name in names if name not in (".", "..")]
            if not names and not self._is_dir(ftp, full):
                raise self._not_found("listdir", path)
            return sorted(names)
        return self._do("listdir", path, list_names)

    def getbytes(self, path: str) -> bytes:
        """ The whole file's contents. """
        buffer = io.BytesIO()
        self.download(path, buffer)
        return buffer.getvalue()

    def setbytes(self, path: str, data: bytes) -> None:
        """ Writes the file (replacing it if it exists). """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"outgoing ftp {self.name!r}: setbytes({path!r}, ...) takes bytes, not "
                            f"{type(data).__name__}; use settext for str")
        self.upload(path, io.BytesIO(bytes(data)))

    def gettext(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.getbytes(path).decode(encoding, errors)

    def settext(self, path: str, text: str, encoding: str = "utf-8", errors: str = "strict") -> None:
        self.setbytes(path, text.encode(encoding, errors))

    def download(self, path: str, file: BinaryIO, chunk_size: int = CHUNK_SIZE) -> None:
        """ Streams the file into `file` (anything with .write(bytes)), a block at a time. """
        def retrieve(ftp: ftplib.FTP) -> None:
            written = [0]

            def write(block: bytes) -> None:
                written[0] += len(block)
                file.write(block)
            try:
                ftp.retrbinary(f"RETR {self._path(path)}", write, blocksize=chunk_size)
            except BaseException as exc:
                if _is_dropped(exc) and not written[0]:
                    raise _Retry from exc  # nothing reached `file` yet: safe to repeat
                raise  # part of the file may be in `file` already: repeating would write it twice
        self._do("download", path, retrieve, retry=False)

    def upload(self, path: str, file: BinaryIO, chunk_size: int = CHUNK_SIZE) -> None:
        """ Streams `file` (anything with .read(n) returning bytes) to the server, replacing the
        file there. Not repeated once data was sent. """
        def store(ftp: ftplib.FTP) -> None:
            start = _position(file)
            try:
                ftp.storbinary(f"STOR {self._path(path)}", file, blocksize=chunk_size)
            except BaseException as exc:
                if _is_dropped(exc) and start is not None and _position(file) == start:
                    raise _Retry from exc  # nothing was read from `file` yet: safe to repeat
                raise  # data may have gone out: a half-done upload is not repeated
        self._do("upload", path, store, retry=False)

    def getinfo(self, path: str) -> Info:
        """ Name, whether it is a directory, size and modification time (MLST if the server offers
        it, else SIZE, MDTM and CWD). """
        return self._do("getinfo", path, lambda ftp: self._info(ftp, path))

    def exists(self, path: str) -> bool:
        try:
            self.getinfo(path)
        except ResourceNotFound:
            return False
        return True

    def isdir(self, path: str) -> bool:
        try:
            return self.getinfo(path).is_dir
        except ResourceNotFound:
            return False

    def isfile(self, path: str) -> bool:
        try:
            return not self.getinfo(path).is_dir
        except ResourceNotFound:
            return False

    def makedir(self, path: str, recreate: bool = False) -> None:
        """ Creates one directory (its parent must exist); an existing one raises DirectoryExists
        unless recreate=True. """
        self._do("makedir", path, lambda ftp: self._makedir(ftp, path, recreate))

    def makedirs(self, path: str, recreate: bool = False) -> None:
        """ Creates the directory and any missing parents; an existing one raises DirectoryExists
        unless recreate=True. """
        def make_all(ftp: ftplib.FTP) -> None:
            full = self._path(path)
            if self._is_dir(ftp, full):
                if recreate:
                    return
                raise DirectoryExists(self._message("makedirs", path, "the directory exists already (pass "
                                                    "recreate=True to accept that)"))
            parts = [part for part in full.split("/") if part]
            current = "/" if full.startswith("/") else ""
            for part in parts:
                current = posixpath.join(current, part) if current else part
                if not self._is_dir(ftp, current):
                    ftp.mkd(current)
        self._do("makedirs", path, make_all)

    def removedir(self, path: str) -> None:
        """ Removes an empty directory. """
        self._do("removedir", path, lambda ftp: ftp.rmd(self._path(path)))

    def remove(self, path: str) -> None:
        """ Deletes a file. """
        self._do("remove", path, lambda ftp: ftp.delete(self._path(path)))

    def move(self, src_path: str, dst_path: str, overwrite: bool = False) -> None:
        """ Renames (RNFR/RNTO) `src_path` to `dst_path`; an existing destination raises
        DestinationExists unless overwrite=True. """
        def rename(ftp: ftplib.FTP) -> None:
            if not overwrite and self._exists(ftp, self._path(dst_path)):
                raise DestinationExists(self._message("move", dst_path, "the destination exists already (pass "
                                                      "overwrite=True to replace it)"))
            ftp.rename(self._path(src_path), self._path(dst_path))
        self._do("move", src_path, rename)

    def ping(self) -> None:
        """ NOOP on a control connection (logging in first if none is open). """
        self._do("ping", "", lambda ftp: ftp.voidcmd("NOOP"))

    def close(self) -> None:
        """ Closes every control connection and refuses later calls; one in use is shut down. """
        with self._lock:
            self.closed = True
            idle, busy = self._idle, list(self._busy)
            self._idle = []
        for ftp in idle:
            _end(ftp, quit=True)
        for ftp in busy:
            sock = getattr(ftp, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked on it; it closes the session
                except OSError:
                    pass
        logger.info("outgoing ftp %r (%s) closed", self.name, self.address)

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            return {"idle": len(self._idle), "in_use": len(self._busy), "pool_size": self.pool_size,
                    "closed": self.closed}

    # ############################################################################################
    # The pool

    def _do(self, operation: str, path: str, fn: Callable[[ftplib.FTP], Any], retry: bool = True) -> Any:
        """ `fn(a control connection)`, errors made FTPErrors; once more on a new one if the first
        was dropped and the call is safe to repeat (`retry`, or a transfer that raised _Retry
        because nothing had been transferred yet). """
        self._refuse_if_closed()
        self._calls.refuse_on_loop(
            f"outgoing ftp {self.name!r}: {operation}()",
            f"use `await conn.run(lambda conn: conn.{operation}(...))`, which runs it in a worker thread, or make "
            f"handle a plain def")
        for attempt in (1, 2):
            with self._session(operation, path) as ftp:
                try:
                    return fn(ftp)
                except FTPError:
                    raise
                except _Retry as exc:
                    ftp.zato_broken = True
                    dropped: BaseException = exc.__cause__ or EOFError("the server closed the control connection")
                    repeatable = True
                except BaseException as exc:
                    if not isinstance(exc, ftplib.error_perm):
                        ftp.zato_broken = True  # a timeout or a drop leaves the session in an unknown state
                    if not _is_dropped(exc):
                        if isinstance(exc, (ftplib.Error, OSError, EOFError)):
                            raise self._error(operation, path, exc, ftp=ftp) from exc
                        raise
                    dropped, repeatable = exc, retry
            if attempt == 2 or not repeatable or self.closed:
                break
            logger.info("outgoing ftp %r: %s dropped a control connection (%s); %s once more on a new one",
                        self.name, self.address, _describe(dropped), operation)
        if not repeatable and not self.closed:
            raise FTPError(self._message(operation, path, f"the connection was lost during the transfer "
                                                          f"({_describe(dropped)}) after part of the data had been "
                                                          f"transferred, so it was not repeated; check the file on the "
                                                          f"server and try again")) from dropped
        raise self._error(operation, path, dropped) from dropped

    @contextmanager
    def _session(self, operation: str, path: str) -> Iterator[ftplib.FTP]:
        self._refuse_if_closed()
        if not self._slots.acquire(timeout=POOL_WAIT):
            raise FTPError(self._message(operation, path, f"all {self.pool_size} control connections (pool_size) "
                                                          f"stayed busy for {POOL_WAIT} s; raise pool_size or make "
                                                          f"fewer calls at once"))
        try:
            with self._lock:
                ftp = self._idle.pop() if self._idle else None
            if ftp is None:
                ftp = self._login(operation, path)
            with self._lock:
                self._busy.add(ftp)
            try:
                yield ftp
            finally:
                with self._lock:
                    self._busy.discard(ftp)
                    keep = not self.closed and not getattr(ftp, "zato_broken", False) and ftp.sock is not None
                    if keep:
                        self._idle.append(ftp)
                if not keep:
                    _end(ftp, quit=False)
        finally:
            self._slots.release()

    def _login(self, operation: str, path: str) -> ftplib.FTP:
        """ A new control connection: connected, TLS (if configured), logged in. """
        if self.tls == TLS_EXPLICIT:
            ftp: ftplib.FTP = ftplib.FTP_TLS(context=self._tls_context, timeout=self.timeout)
        else:
            ftp = ftplib.FTP(timeout=self.timeout)
        try:
            ftp.connect(self.host, self.port)
            ftp.login(self.user, self._password, self.acct)  # FTP_TLS: AUTH TLS first
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()  # the data channel is encrypted too
            ftp.set_pasv(self.passive)
            if self._mlst is None:
                self._mlst = self._offers_mlst(ftp)
            if self._mlst:
                try:
                    ftp.sendcmd("OPTS MLST type;size;modify;")  # the facts getinfo() reads
                except ftplib.error_perm:
                    pass
            self._refuse_if_closed()
        except BaseException as exc:
            _end(ftp, quit=False)
            if isinstance(exc, FTPError):
                raise
            if isinstance(exc, (ftplib.Error, OSError, EOFError)):
                raise self._error(operation, path, exc, logging_in=True) from exc
            raise
        return ftp

    @staticmethod
    def _offers_mlst(ftp: ftplib.FTP) -> bool:
        try:
            features = ftp.sendcmd("FEAT")
        except ftplib.error_perm:
            return False
        return any(line.strip().upper().startswith("MLST") for line in features.splitlines()[1:])

    def _refuse_if_closed(self) -> None:
        if self.closed:
            raise FTPError(f"outgoing ftp {self.name!r} was closed (its definition was changed or deleted, or the "
                           f"server is stopping); look it up again through self.outgoing.ftp.get(name) for each use")

    # ############################################################################################
    # Paths and facts

    def _path(self, path: str) -> str:
        path = str(path or ".")
        if path.startswith("/") or not self.default_directory:
            return posixpath.normpath(path) if path != "." else path
        return posixpath.normpath(posixpath.join(self.default_directory, path))

    def _uses_mlst(self, ftp: ftplib.FTP) -> bool:
        return bool(self._mlst)

    def _info(self, ftp: ftplib.FTP, path: str) -> Info:
        full = self._path(path)
        name = posixpath.basename(full.rstrip("/")) or "/"
        if self._uses_mlst(ftp):
            try:
                reply = ftp.sendcmd(f"MLST {full}")
            except ftplib.error_perm as exc:
                if str(exc).startswith("550"):
                    raise self._not_found("getinfo", path, exc) from exc
                raise
            facts = _mlst_facts(reply)
            kind = facts.get("type", "").lower()
            size = facts.get("size")
            return Info(name, kind in ("dir", "cdir", "pdir"), int(size) if size and kind == "file" else None,
                        _timestamp(facts.get("modify")), facts)
        try:
            ftp.voidcmd("TYPE I")  # SIZE counts bytes of the binary file (many servers refuse it in ASCII mode)
            size: int | None = ftp.size(full)
        except ftplib.error_perm:
            size = None
        if size is None:
            if self._is_dir(ftp, full):
                return Info(name, True, None, None)
            raise self._not_found("getinfo", path)
        try:
            modified = _timestamp(ftp.voidcmd(f"MDTM {full}").split(maxsplit=1)[1])
        except (ftplib.error_perm, IndexError):
            modified = None
        return Info(name, False, size, modified)

    def _exists(self, ftp: ftplib.FTP, full: str) -> bool:
        try:
            self._info(ftp, full)
        except ResourceNotFound:
            return False
        return True

    def _is_dir(self, ftp: ftplib.FTP, full: str) -> bool:
        if self._uses_mlst(ftp):
            try:
                return self._info(ftp, full).is_dir
            except ResourceNotFound:
                return False
        here = ftp.pwd()
        try:
            ftp.cwd(full)
        except ftplib.error_perm:
            return False
        ftp.cwd(here)
        return True

    def _makedir(self, ftp: ftplib.FTP, path: str, recreate: bool) -> None:
        full = self._path(path)
        if self._is_dir(ftp, full):
            if recreate:
                return
            raise DirectoryExists(self._message("makedir", path, "the directory exists already (pass recreate=True "
                                                "to accept that)"))
        ftp.mkd(full)

    # ############################################################################################
    # Errors

    def _message(self, operation: str, path: str, what: str) -> str:
        where = f" {path!r}" if path else ""
        return f"outgoing ftp {self.name!r}: {operation}{where} on {self.address}: {what}"

    def _not_found(self, operation: str, path: str, exc: BaseException | None = None) -> ResourceNotFound:
        reply = str(exc) if exc else ""
        return ResourceNotFound(self._message(operation, path, f"no such file or directory"
                                              f"{f' (the server replied {reply})' if reply else ''}"
                                              f"{self._relative_hint(path)}"), reply)

    def _relative_hint(self, path: str) -> str:
        if path.startswith("/") or not path:
            return ""
        return f"; it was looked for as {self._path(path)!r}" + (
            f" (relative to default_directory {self.default_directory!r})" if self.default_directory else
            " (relative to the login directory)")

    def _error(self, operation: str, path: str, exc: BaseException, logging_in: bool = False,
               ftp: ftplib.FTP | None = None) -> FTPError:
        """ An FTPError naming the connection, the operation, the path and the reply (or what
        else went wrong), with what to do. """
        if isinstance(exc, FTPError):
            return exc
        if self.closed and isinstance(exc, (OSError, EOFError)):
            return FTPError(self._message(operation, path, "the connection was closed while in use (its definition "
                                                           "was changed or deleted, or the server is stopping)"))
        if isinstance(exc, ftplib.Error):
            reply = str(exc).strip()
            if reply.startswith("530"):
                return FTPError(self._message(operation, path, f"the server refused the login of user {self.user!r} "
                                                               f"(it replied {reply}); check user and password (set "
                                                               f"the password with "
                                                               f"{secret_call('outgoing_ftp', self.name, 'password')})"), reply)
            if reply[:3] in ("550", "501", "450") and ftp is not None and not logging_in and self._missing(ftp, path):
                return self._not_found(operation, path, exc)
            return FTPError(self._message(operation, path, f"the server replied {reply}"), reply)
        if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
            return FTPError(self._message(operation, path, f"cannot connect to {self.host}:{self.port} "
                                                           f"({exc.strerror or exc}); is the FTP server running, and "
                                                           f"are host and port right?"))
        if isinstance(exc, DROPPED) and not logging_in:
            return FTPError(self._message(operation, path, f"the server closed the control connection "
                                                           f"({_describe(exc)}), also on a new one; is it an FTP "
                                                           f"server, and is it overloaded or going down?"))
        if isinstance(exc, ssl.SSLCertVerificationError):
            return FTPError(self._message(operation, path, f"the TLS certificate of {self.host}:{self.port} could not "
                                                           f"be verified ({exc.verify_message}); set tls_ca_file to the "
                                                           f"certificate of the CA that signed it (or, for tests only, "
                                                           f"tls_verify to false)"))
        if isinstance(exc, ssl.SSLError):
            return FTPError(self._message(operation, path, f"TLS with {self.host}:{self.port} failed "
                                                           f"({exc.reason or exc}); is tls = explicit right for it?"))
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return FTPError(self._message(operation, path, f"no answer within timeout = {self.timeout} s"))
        if isinstance(exc, OSError):
            return FTPError(self._message(operation, path, f"cannot connect to {self.host}:{self.port} "
                                                           f"({exc.strerror or exc}); is the FTP server running, and "
                                                           f"are host and port right?"))
        return FTPError(self._message(operation, path, f"{type(exc).__name__}: {exc}"))

    def _missing(self, ftp: ftplib.FTP, path: str) -> bool:
        """ Whether a 550 meant "not there" (rather than, say, "permission denied"), asked on the
        same control connection. """
        try:
            return not self._exists(ftp, self._path(path))
        except (ftplib.Error, OSError, EOFError):
            return False


# ################################################################################################


def _flag(definition: Mapping[str, Any], name: str, default: bool) -> bool:
    value = definition.get(name)
    return default if value is None or value == "" else as_bool(value)


def _is_dropped(exc: BaseException) -> bool:
    """ The server closed the control connection (EOF, a reset, a broken pipe, or said so: 421). """
    if isinstance(exc, DROPPED):
        return True
    return isinstance(exc, ftplib.error_temp) and str(exc).startswith("421")


def _position(file: Any) -> int | None:
    try:
        return file.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _end(ftp: ftplib.FTP, quit: bool) -> None:
    try:
        if quit and ftp.sock is not None:
            ftp.quit()
    except (ftplib.Error, OSError, EOFError):
        pass
    finally:
        try:
            ftp.close()
        except OSError:
            pass


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _mlst_facts(reply: str) -> dict[str, str]:
    """ The facts of an MLST reply ("250-Listing ...", " type=file;size=3;modify=20240101120000; name",
    "250 End"): the entry line starts with a space; its facts, which hold no spaces, come first. """
    lines = reply.splitlines()
    entry = next((line for line in lines[1:] if line.startswith(" ")), lines[1] if len(lines) > 1 else "")
    facts: dict[str, str] = {}
    for fact in entry.lstrip().split(" ", 1)[0].split(";"):
        key, _, value = fact.partition("=")
        if key:
            facts[key.strip().lower()] = value.strip()
    return facts


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    value = value.strip()
    try:
        stamp = datetime.strptime(value[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc)

