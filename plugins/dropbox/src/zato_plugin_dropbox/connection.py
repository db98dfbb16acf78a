""" Dropbox connections as services use them: `self.cloud.dropbox[name]` is a `DropboxConnection`,
whose `.conn` is itself and `.conn.client` the SDK's client (`ZatoDropbox`, a `dropbox.Dropbox`).

* Plain services call `.client` and `.upload` directly: they run in a worker thread.
* `async def` services call `await conn.run(fn, *args)`: `fn(client, *args)` runs in a worker
  thread. A call of the client from the trio loop itself raises `BlockingCallError` at once.
* Errors of Dropbox become `DropboxError`s (an `OutgoingError`) naming the connection, what it
  did and what to do; each is also the SDK's own exception type (`ApiError`, `AuthError`,
  `RateLimitError`) with its attributes, so `except dropbox.exceptions.ApiError` still works.
* The SDK retries 5xx answers (`max_retries_on_error`) and 429 ones, after each Retry-After
  (`max_retries_on_rate_limit`), and refreshes short-lived tokens (app_key + refresh token).
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from functools import partial
from typing import Any, BinaryIO, Callable, Mapping

import dropbox
import requests
from dropbox import files as dropbox_files
from dropbox.dropbox_client import RouteErrorResult
from dropbox.exceptions import ApiError, AuthError, BadInputError, HttpError, InternalServerError, RateLimitError
from dropbox.session import HOST_API

from zato.plugin_api import BlockingCallError, BlockingCalls, OutgoingError, secret_call, setting_number  # noqa: F401 (BlockingCallError: raised from here)

logger = logging.getLogger("zato.dropbox")

# Dropbox takes at most 150 MB in one files/upload call; above that, an upload session. Module
# constants so that tests (and users with slow links) can lower them.
UPLOAD_SESSION_THRESHOLD = 150 * 1024 * 1024
UPLOAD_CHUNK_SIZE = 8 * 1024 * 1024  # each append_v2 call (a multiple of 4 MB suits Dropbox best)
RUN_THREADS = 20  # worker threads one connection's run() may use at once
POOL_SIZE = 8  # HTTPS connections kept open to each Dropbox host

DEFAULTS = {"timeout": 30.0, "max_retries_on_error": 4, "max_retries_on_rate_limit": 3}


class DropboxError(OutgoingError):
    """ A Dropbox call failed; the message says which connection, what and what to do. """

    @classmethod
    def from_sdk(cls, message: str, cause: BaseException | None = None) -> "DropboxError":
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        if cause is not None:
            error.__dict__.update(cause.__dict__)  # the SDK's attributes (error, request_id, backoff...)
        return error

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    __repr__ = Exception.__repr__


class DropboxAuthError(DropboxError, AuthError):
    """ 401: the access token expired or was revoked, or a refresh token was refused. """


class DropboxPathError(DropboxError, ApiError):
    """ 409: Dropbox refused the call for its path (a conflict, not found...); `.error_summary`. """

    error_summary = ""


class DropboxRateLimitError(DropboxError, RateLimitError):
    """ 429 after every retry the definition allows. """


class DropboxServerError(DropboxError, InternalServerError):
    """ 5xx after every retry the definition allows (max_retries_on_error). """


class DropboxHTTPError(DropboxError, HttpError):
    """ Any other HTTP error of Dropbox (400: a bad request). """


class DropboxUnavailableError(DropboxError):
    """ Dropbox could not be reached (DNS, TCP, TLS, a timeout). """


class ZatoDropbox(dropbox.Dropbox):
    """ A `dropbox.Dropbox` that refuses to block the trio loop, refuses calls once its connection
    was closed, refreshes tokens on its own API host, and raises `DropboxError`s. """

    _zato_connection: "DropboxConnection | None" = None
    _zato_local = threading.local()  # the error_summary of a 409 answer, for the error's message

    def refresh_access_token(self, host: str | None = None, scope: Any = None) -> None:
        # The SDK's default host is bound when the SDK is imported; the client's own map is what
        # this client talks to.
        return super().refresh_access_token(host=host or self._host_map[HOST_API], scope=scope)

    def request_json_string_with_retry(self, *args: Any, **kwargs: Any) -> Any:
        result = super().request_json_string_with_retry(*args, **kwargs)
        if isinstance(result, RouteErrorResult):
            try:
                self._zato_local.summary = json.loads(result.obj_result).get("error_summary") or ""
            except (ValueError, AttributeError):
                self._zato_local.summary = ""
        return result

    def request(self, route: Any, namespace: str, *args: Any, **kwargs: Any) -> Any:
        connection = self._zato_connection
        if connection is None:
            return super().request(route, namespace, *args, **kwargs)
        connection.check_usable()
        call = f"{namespace}/{route.name}" + (f"_v{route.version}" if route.version > 1 else "")
        path = _path_of(args[0] if args else kwargs.get("request_arg"))
        if path:
            call = f"{call} {path!r}"  # which file, in every error of this call
        self._zato_local.summary = ""
        try:
            return super().request(route, namespace, *args, **kwargs)
        except DropboxError:
            raise
        except (ApiError, AuthError, RateLimitError, BadInputError, HttpError, requests.RequestException) as exc:
            raise connection.explain(call, exc, getattr(self._zato_local, "summary", "")) from exc


def _path_of(request_arg: Any) -> str | None:
    """ The Dropbox path a call's argument names (files/upload, download, delete...; an upload
    session's finish names it in its commit), if any. """
    path = getattr(request_arg, "path", None) or getattr(getattr(request_arg, "commit", None), "path", None)
    return path if isinstance(path, str) else None


class DropboxConnection:
    """ One Dropbox client with its settings: `.client` (the SDK's client), `.upload(path, data)`,
    `.run(fn, *args)` for async services, `.ping()` and `.close()` for the server. `.conn` is the
    connection itself, so that `self.cloud.dropbox[name].conn.client` reads as in Zato. """

    def __init__(self, settings: Mapping[str, Any], *, accessor: str, where: str, token_hint: str) -> None:
        self.accessor = accessor
        self.where = where
        self.token_hint = token_hint
        self.closed = False
        self.default_directory = normalise_directory(settings.get("default_directory") or "")
        self.max_retries_on_rate_limit = number(settings, "max_retries_on_rate_limit", int, where)
        self.has_refresh = bool(settings.get("oauth2_refresh_token"))
        self.has_token = bool(settings.get("oauth2_access_token"))
        self._calls = BlockingCalls(accessor, threads=RUN_THREADS)
        self.session = tls_session(settings, where)
        app_key = str(settings.get("app_key") or "").strip() or None
        if self.has_refresh and not app_key:
            raise ValueError(f"{where}: oauth2_refresh_token is set but app_key is empty; give the app's key (and "
                             f"app_secret), or use oauth2_access_token alone")
        if not self.has_token and not self.has_refresh:  # the SDK refuses to build a client with neither
            self.client: Any = _NoCredentials(self)
            return
        self.client = ZatoDropbox(
            oauth2_access_token=settings.get("oauth2_access_token") or None,
            oauth2_refresh_token=settings.get("oauth2_refresh_token") or None,
            app_key=app_key, app_secret=settings.get("app_secret") or None,
            user_agent=str(settings.get("user_agent") or "").strip() or None,
            timeout=number(settings, "timeout", float, where),
            max_retries_on_error=number(settings, "max_retries_on_error", int, where),
            max_retries_on_rate_limit=self.max_retries_on_rate_limit,
            headers=parse_headers(settings.get("http_headers"), where) or None,
            session=self.session)
        self.client._zato_connection = self

    @property
    def conn(self) -> "DropboxConnection":
        return self

    # ############################################################################################

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """ For `async def` services: `await conn.run(lambda client: client.files_list_folder(""))`.
        `fn(client, *args)` runs in a worker thread (at most `RUN_THREADS` of this connection at
        once). From a plain `def handle` it calls `fn(client, *args)` at once. """
        return self._calls.call(partial(fn, self.client, *args))

    def upload(self, path: str, data: bytes | BinaryIO, overwrite: bool = False) -> Any:
        """ Uploads `data` (bytes or a binary file object) to `path`, relative to
        default_directory; returns the SDK's `FileMetadata`. Above `UPLOAD_SESSION_THRESHOLD`
        bytes it goes in an upload session, `UPLOAD_CHUNK_SIZE` bytes a call. `overwrite=False`:
        an existing file is a `DropboxPathError` (path/conflict). In an `async def` handle:
        `await conn.upload(...)`. """
        return self._calls.call(self._upload, path, data, overwrite)

    def ping(self) -> str:
        """ users/get_current_account: the account's display name, or raises saying why. """
        return self.client.users_get_current_account().name.display_name

    def close(self) -> None:
        """ Closes the HTTPS connections; later calls are refused. """
        self.closed = True
        self.session.close()
        logger.info("%s closed", self.accessor)

    # ############################################################################################

    def full_path(self, path: str) -> str:
        path = str(path)
        if not path.strip("/"):
            raise ValueError(f"{self.accessor}: upload path {path!r} names no file; give a file name such as "
                             f"'report.csv'")
        return path if path.startswith("/") and not self.default_directory else \
            f"{self.default_directory}/{path.lstrip('/')}"

    def _upload(self, path: str, data: bytes | BinaryIO, overwrite: bool) -> Any:
        target = self.full_path(path)
        mode = dropbox_files.WriteMode.overwrite if overwrite else dropbox_files.WriteMode.add
        if isinstance(data, str):
            raise TypeError(f"{self.accessor}.upload({path!r}): data is str; give bytes (e.g. data.encode('utf-8')) "
                            f"or a file opened in binary mode")
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            if len(data) <= UPLOAD_SESSION_THRESHOLD:
                return self.client.files_upload(data, target, mode=mode)
            reader = _Chunks(b"", io.BytesIO(data))
        else:
            first = _read(data, UPLOAD_SESSION_THRESHOLD + 1)
            if len(first) <= UPLOAD_SESSION_THRESHOLD:
                return self.client.files_upload(first, target, mode=mode)
            reader = _Chunks(first, data)
        commit = dropbox_files.CommitInfo(path=target, mode=mode)
        chunk = reader.read(UPLOAD_CHUNK_SIZE)
        session_id = self.client.files_upload_session_start(chunk).session_id
        offset = len(chunk)
        chunk = reader.read(UPLOAD_CHUNK_SIZE)
        while True:
            following = reader.read(UPLOAD_CHUNK_SIZE)  # one chunk ahead: the last one goes with finish
            cursor = dropbox_files.UploadSessionCursor(session_id=session_id, offset=offset)
            if not following:
                return self.client.files_upload_session_finish(chunk, cursor, commit)
            self.client.files_upload_session_append_v2(chunk, cursor)
            offset += len(chunk)
            chunk = following

    def check_usable(self) -> None:
        if self.closed:
            raise DropboxError.from_sdk(
                f"{self.accessor} was closed (its definition was edited or deleted, or the server is stopping); get "
                f"the connection again through {self.accessor} for each use, do not keep it")
        self._calls.refuse_on_loop(
            f"{self.accessor}.conn.client", f"called here it would stop the whole server while Dropbox answers; use "
            f"`await {self.accessor}.conn.run(lambda client: client.files_list_folder(''))`, which runs it in a "
            f"worker thread, or make handle a plain def")

    def explain(self, call: str, exc: BaseException, summary: str) -> DropboxError:
        """ The `DropboxError` for an SDK exception of `call` (`files/upload`). """
        what = f"{self.accessor}: {call}"
        if isinstance(exc, AuthError):
            error = getattr(exc, "error", None)
            if self.has_refresh and isinstance(exc, AuthError) and error is not None and \
                    error.is_invalid_access_token() and not self.has_token:
                reason = ("Dropbox refused the refresh token (invalid_grant): it was revoked, or app_key/app_secret "
                          "do not match it; get a new refresh token and set it with "
                          f"{self.token_hint.replace('oauth2_access_token', 'oauth2_refresh_token')}")
            else:
                tag = error._tag if error is not None and hasattr(error, "_tag") else "unauthorized"
                reason = f"Dropbox refused the access token ({tag}: expired or revoked); set a new token with {self.token_hint}"
            return DropboxAuthError.from_sdk(f"{what}: {reason} (configured in {self.where})", exc)
        if isinstance(exc, RateLimitError):
            return DropboxRateLimitError.from_sdk(
                f"{what}: rate limited by Dropbox (429) after {self.max_retries_on_rate_limit} retries, each after "
                f"its Retry-After ({exc.backoff} s the last time); call less often, or raise "
                f"max_retries_on_rate_limit in {self.where}", exc)
        if isinstance(exc, ApiError):
            summary = summary or str(getattr(exc, "error", ""))
            hint = ("a file or folder is there already; upload with overwrite=True, or under another name"
                    if "conflict" in summary else "check the path" if "not_found" in summary else
                    "see https://www.dropbox.com/developers/documentation/http/documentation")
            error = DropboxPathError.from_sdk(f"{what}: Dropbox refused it (409 {summary}): {hint}", exc)
            error.error_summary = summary
            return error
        if isinstance(exc, requests.RequestException):
            return DropboxUnavailableError.from_sdk(
                f"{what}: cannot reach Dropbox ({type(exc).__name__}: {exc}); check the network, a proxy, and "
                f"tls_ca_file in {self.where}")
        status = getattr(exc, "status_code", "?")
        if isinstance(exc, InternalServerError):
            return DropboxServerError.from_sdk(
                f"{what}: Dropbox answered {status}: {getattr(exc, 'body', '')} (retried max_retries_on_error = "
                f"{self.client._max_retries_on_error} times; try again later; configured in {self.where})", exc)
        return DropboxHTTPError.from_sdk(f"{what}: Dropbox answered {status}: {getattr(exc, 'body', exc)} "
                                         f"(configured in {self.where})", exc)

    def __repr__(self) -> str:
        return f"<DropboxConnection {self.accessor}{' closed' if self.closed else ''}>"


class _NoCredentials:
    """ The client of a definition with no token yet (its secrets are set with their own call,
    after it was created): any use says which secret to set. """

    def __init__(self, connection: DropboxConnection) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        connection = self._connection
        connection.check_usable()
        raise DropboxAuthError.from_sdk(
            f"{connection.accessor}: {name}: no credentials: neither oauth2_access_token nor oauth2_refresh_token "
            f"(with app_key) is set; set a token with {connection.token_hint} (configured in {connection.where})")


# ################################################################################################


class _CAFileSession(requests.Session):
    """ A session that trusts its own CA file even where REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE is set
    (requests lets those win over `Session.verify`); proxies from the environment still apply. """

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify
        return settings


def _read(stream: BinaryIO, size: int) -> bytes:
    """ Up to `size` bytes of `stream` (fewer only at its end). """
    parts, left = [], size
    while left > 0:
        part = stream.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


class _Chunks:
    """ Chunks of what was read already (`first`), then of the rest of `stream`. """

    def __init__(self, first: bytes, stream: BinaryIO) -> None:
        self.first = io.BytesIO(first)
        self.stream = stream

    def read(self, size: int) -> bytes:
        data = self.first.read(size)
        return data + _read(self.stream, size - len(data)) if len(data) < size else data


def tls_session(settings: Mapping[str, Any], where: str) -> requests.Session:
    """ The connection's own HTTPS session (so that close() releases its sockets). """
    ca_file = str(settings.get("tls_ca_file") or "").strip()
    if ca_file:
        if not os.path.isfile(ca_file):
            raise ValueError(f"{where}: tls_ca_file = {ca_file!r} is not a file; give a PEM file of the certificate "
                             f"authorities to trust, or leave it empty to trust the system's")
        session: requests.Session = _CAFileSession()
        session.verify = ca_file
    else:
        session = requests.Session()
        session.verify = True
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    return session


def number(settings: Mapping[str, Any], field: str, kind: type, where: str) -> Any:
    return setting_number(settings, field, kind, kind(DEFAULTS[field]), check=lambda value: value >= 0,
                          expected="a number, 0 or more", where=where)


def parse_headers(value: Any, where: str) -> dict[str, str]:
    """ `Name: value` lines (or a dict) -> a dict. """
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    headers = {}
    for number_, line in enumerate(str(value).splitlines(), 1):
        if not line.strip():
            continue
        name, sep, text = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"{where}: http_headers line {number_} ({line.strip()!r}) is not `Name: value`")
        headers[name.strip()] = text.strip()
    return headers


def normalise_directory(directory: str) -> str:
    directory = str(directory).strip().rstrip("/")
    if directory and not directory.startswith("/"):
        directory = "/" + directory
    return directory


def create_outgoing(server: Any, definition: Mapping[str, Any]) -> DropboxConnection:
    """ `self.cloud.dropbox[name]` from a `cloud_dropbox` object (runs in a worker thread). """
    name = definition["name"]
    quoted = name.replace("'", "\\'")
    return DropboxConnection(
        definition, accessor=f"self.cloud.dropbox['{quoted}']", where=f"cloud_dropbox {name!r}",
        token_hint=secret_call("cloud_dropbox", name, "oauth2_access_token"))
