""" A local stand-in for Dropbox, for testing services that use Dropbox connections with the real
SDK: an HTTPS server on 127.0.0.1 (port 0) with its own test CA, speaking the part of Dropbox's
API that connections and the usual services use, files kept in memory (`server.files`).

```python
from zato_plugin_dropbox.testing import DropboxStandIn

with DropboxStandIn() as dropbox_server, dropbox_server.pointed_at():
    # clients built in here reach the stand-in; a connection needs tls_ca_file = dropbox_server.ca_file
    ...
    assert dropbox_server.files["/reports/a.csv"] == b"..."
```

Routes: /2/files/upload, /2/files/upload_session/start, /append_v2, /finish,
/2/files/list_folder, /2/files/download, /2/users/get_current_account, /oauth2/token (refresh).
Errors as Dropbox shapes them: 409 with `error_summary` (path/conflict/file, path/not_found,
incorrect_offset), 401 expired_access_token / invalid_access_token, 429 with Retry-After
(`rate_limit(times, retry_after)`), 5xx (`fail(times)`), 400 invalid_grant for a refresh token it does not know,
409 path/disallowed_name for the names Dropbox never stores (`DISALLOWED_NAMES`: desktop.ini, .DS_Store...).
`stop()` then `start()` is Dropbox unreachable, then back at the same address.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import secrets
import socket
import ssl
import tempfile
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs

from zato.plugin_api import make_test_certificates

ACCESS_TOKEN = "test-access-token"
APP_KEY = "test-app-key"
APP_SECRET = "test-app-secret"
REFRESH_TOKEN = "test-refresh-token"
ACCOUNT_NAME = "Test Account"
# File names Dropbox refuses to store (path/disallowed_name), as it does desktop.ini or .DS_Store
DISALLOWED_NAMES = frozenset({"desktop.ini", "thumbs.db", ".ds_store", "icon\r", ".dropbox", ".dropbox.attr"})


def content_hash(data: bytes) -> str:
    """ Dropbox's content hash: SHA-256 of the SHA-256 of each 4 MB block. """
    blocks = b"".join(hashlib.sha256(data[i:i + 4 * 1024 * 1024]).digest()
                      for i in range(0, len(data), 4 * 1024 * 1024))
    return hashlib.sha256(blocks).hexdigest()


class DropboxStandIn:
    """ The stand-in server. `start()` / `stop()` (also a context manager); `stop()` closes every
    connection, and `start()` again listens at the same address. Attributes tests inspect or set:
    `files` (display path -> bytes), `tokens` (valid access tokens), `expired` (tokens answered
    with 401 expired_access_token), `refresh_tokens` (refresh token -> app key), `apps` (app key ->
    secret), `requests` (the route and headers of each request), `connections_open`. """

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="dropbox-standin-")
        self._certificates = make_test_certificates(Path(self._tmp.name), "Dropbox stand-in test CA")
        self.ca_file = self._certificates.ca_file
        self.files: dict[str, bytes] = {}
        self.tokens: set[str] = {ACCESS_TOKEN}
        self.expired: set[str] = set()
        self.refresh_tokens: dict[str, str] = {REFRESH_TOKEN: APP_KEY}
        self.apps: dict[str, str] = {APP_KEY: APP_SECRET}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sessions: dict[str, bytearray] = {}
        self._rate_limited = 0
        self._failing = 0
        self._failure_status = 500
        self._retry_after = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self.port = 0

    # ############################################################################################

    @property
    def host(self) -> str:
        """ What the SDK's host names become: `127.0.0.1:PORT`. """
        return f"127.0.0.1:{self.port}"

    @property
    def connections_open(self) -> int:
        with self._lock:
            return len(self._sockets)

    def start(self) -> "DropboxStandIn":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._certificates.cert_file, self._certificates.key_file)
        standin = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                try:
                    tls = context.wrap_socket(request, server_side=True)  # takes the socket over
                except (ssl.SSLError, OSError):
                    return
                with standin._lock:
                    standin._sockets.add(tls)
                try:
                    self.RequestHandlerClass(tls, client_address, self)
                except OSError:
                    pass  # the stand-in stopped under it, or the client went away
                finally:
                    with standin._lock:
                        standin._sockets.discard(tls)
                    tls.close()

        self._server = Server(("127.0.0.1", self.port), _handler(self))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="dropbox-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """ Stops listening and closes every connection (Dropbox is gone). """
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._sockets.clear()
        self._thread.join(5)
        self._server = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> "DropboxStandIn":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def pointed_at(self) -> Iterator["DropboxStandIn"]:
        """ Clients built in this block talk to the stand-in: the SDK's host names (which it reads
        from DROPBOX_API_HOST etc. when it is imported) are set to it, and set back afterwards. """
        import dropbox.dropbox_client as client_module
        import dropbox.session as session_module
        names = ("API_HOST", "API_CONTENT_HOST", "API_NOTIFICATION_HOST")
        saved = {(module, name): getattr(module, name) for module in (client_module, session_module)
                 for name in names if hasattr(module, name)}
        for module, name in saved:
            setattr(module, name, self.host)
        try:
            yield self
        finally:
            for (module, name), value in saved.items():
                setattr(module, name, value)

    def rate_limit(self, times: int, retry_after: int = 0) -> None:
        """ The next `times` API calls are answered 429 with Retry-After: `retry_after`. """
        with self._lock:
            self._rate_limited, self._retry_after = times, retry_after

    def fail(self, times: int, status: int = 500) -> None:
        """ The next `times` API calls are answered `status` (a 5xx: Dropbox's trouble). """
        with self._lock:
            self._failing, self._failure_status = times, status

    def expire(self, token: str = ACCESS_TOKEN) -> None:
        """ `token` is answered with 401 expired_access_token from now on. """
        self.tokens.discard(token)
        self.expired.add(token)

    # ############################################################################################

    def take_failure(self) -> int | None:
        with self._lock:
            if self._failing <= 0:
                return None
            self._failing -= 1
            return self._failure_status

    def take_rate_limit(self) -> int | None:
        with self._lock:
            if self._rate_limited <= 0:
                return None
            self._rate_limited -= 1
            return self._retry_after

    def metadata(self, path: str) -> dict[str, Any]:
        data = self.files[path]
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = hashlib.sha1(path.lower().encode("utf-8")).hexdigest()
        return {".tag": "file", "name": path.rsplit("/", 1)[-1], "id": f"id:{digest[:22]}",
                "client_modified": now, "server_modified": now, "rev": secrets.token_hex(8) + "0",
                "size": len(data), "path_lower": path.lower(), "path_display": path,
                "content_hash": content_hash(data), "is_downloadable": True}

    def find(self, path: str) -> str | None:
        lower = path.lower()
        return next((name for name in self.files if name.lower() == lower), None)

    def store(self, path: str, data: bytes, mode: Any) -> tuple[int, dict[str, Any]]:
        """ (status, body) of writing a file: 409 path/conflict/file where one exists and mode is add. """
        tag = mode.get(".tag") if isinstance(mode, dict) else (mode or "add")
        if path.rsplit("/", 1)[-1].lower() in DISALLOWED_NAMES:  # as Dropbox: files it never syncs
            return 409, {"error_summary": "path/disallowed_name/..",
                         "error": {".tag": "path", "reason": {".tag": "disallowed_name"}, "upload_session_id": ""}}
        with self._lock:
            existing = self.find(path)
            if existing is not None and tag == "add":
                return 409, {"error_summary": "path/conflict/file/..",
                             "error": {".tag": "path", "reason": {".tag": "conflict", "conflict": {".tag": "file"}},
                                       "upload_session_id": ""}}
            if existing is not None:
                del self.files[existing]
            self.files[path] = data
            return 200, self.metadata(path)


def _not_found(summary_head: str = "path") -> tuple[int, dict[str, Any]]:
    return 409, {"error_summary": f"{summary_head}/not_found/..",
                 "error": {".tag": summary_head, summary_head: {".tag": "not_found"}}}


def _handler(standin: DropboxStandIn) -> type[BaseHTTPRequestHandler]:

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go in two writes: without TCP_NODELAY the body would wait ~40 ms for
        # the client's delayed ACK on every answer
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
            payload = raw if raw is not None else json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Dropbox-Request-Id", secrets.token_hex(8))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            standin.requests.append((self.path, dict(self.headers.items())))
            if self.path == "/oauth2/token":
                return self.token(parse_qs(body.decode("utf-8")))
            auth = self.headers.get("Authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            if token in standin.expired:
                return self.reply(401, {"error_summary": "expired_access_token/..",
                                        "error": {".tag": "expired_access_token"}})
            if token not in standin.tokens:
                return self.reply(401, {"error_summary": "invalid_access_token/..",
                                        "error": {".tag": "invalid_access_token"}})
            failure = standin.take_failure()
            if failure is not None:
                return self.reply(failure, None, raw=b"Internal Server Error (the stand-in was told to fail)")
            retry_after = standin.take_rate_limit()
            if retry_after is not None:
                return self.reply(429, {"error_summary": "too_many_requests/..",
                                        "error": {"reason": {".tag": "too_many_requests"},
                                                  "retry_after": retry_after}},
                                  headers={"Retry-After": str(retry_after)})
            header = self.headers.get("Dropbox-API-Arg")
            arg = json.loads(header) if header else (json.loads(body) if body.strip() else None)
            route = ROUTES.get(self.path)
            if route is None:
                return self.reply(404, {"error_summary": "not supported by the stand-in"}, raw=b"Unknown route")
            status, result, *data = route(standin, arg, body if header else b"")
            if data:  # a download: the metadata in a header, the content as the body
                return self.reply(status, None, headers={"Dropbox-API-Result": json.dumps(result)}, raw=data[0])
            self.reply(status, result)

        def token(self, form: dict[str, list[str]]) -> None:
            value = {key: values[0] for key, values in form.items()}
            app_key = standin.refresh_tokens.get(value.get("refresh_token", ""))
            secret_ok = standin.apps.get(value.get("client_id", "")) == value.get("client_secret")
            if value.get("grant_type") != "refresh_token" or app_key != value.get("client_id") or not secret_ok:
                return self.reply(400, {"error": "invalid_grant", "error_description": "refresh token is invalid"})
            token = "short-lived-" + secrets.token_hex(8)
            standin.tokens.add(token)
            self.reply(200, {"access_token": token, "token_type": "bearer", "expires_in": 14400})

    return Handler


# Each route: (standin, arg, binary body) -> (status, JSON result[, download content])

def _upload(standin: DropboxStandIn, arg: dict[str, Any], data: bytes) -> tuple[int, Any]:
    if arg.get("content_hash") and arg["content_hash"] != content_hash(data):
        return 409, {"error_summary": "content_hash_mismatch/..", "error": {".tag": "content_hash_mismatch"}}
    return standin.store(arg["path"], data, arg.get("mode"))


def _session_start(standin: DropboxStandIn, arg: dict[str, Any], data: bytes) -> tuple[int, Any]:
    session_id = "session-" + secrets.token_hex(8)
    standin.sessions[session_id] = bytearray(data)
    return 200, {"session_id": session_id}


def _session_append(standin: DropboxStandIn, arg: dict[str, Any], data: bytes) -> tuple[int, Any]:
    problem = _check_cursor(standin, arg["cursor"])
    if problem:
        return problem
    standin.sessions[arg["cursor"]["session_id"]] += data
    return 200, None


def _session_finish(standin: DropboxStandIn, arg: dict[str, Any], data: bytes) -> tuple[int, Any]:
    problem = _check_cursor(standin, arg["cursor"])
    if problem:
        return problem
    content = bytes(standin.sessions.pop(arg["cursor"]["session_id"]) + data)
    status, result = standin.store(arg["commit"]["path"], content, arg["commit"].get("mode"))
    if status == 409:  # finish's errors put the write error under "path"
        result = {"error_summary": result["error_summary"],
                  "error": {".tag": "path", "path": result["error"]["reason"]}}
    return status, result


def _check_cursor(standin: DropboxStandIn, cursor: dict[str, Any]) -> tuple[int, Any] | None:
    session = standin.sessions.get(cursor["session_id"])
    if session is None:
        return 409, {"error_summary": "lookup_failed/not_found/..",
                     "error": {".tag": "lookup_failed", "lookup_failed": {".tag": "not_found"}}}
    if cursor["offset"] != len(session):
        return 409, {"error_summary": "lookup_failed/incorrect_offset/..",
                     "error": {".tag": "lookup_failed", "lookup_failed": {".tag": "incorrect_offset",
                                                                          "correct_offset": len(session)}}}
    return None


def _list_folder(standin: DropboxStandIn, arg: dict[str, Any], data: bytes) -> tuple[int, Any]:
    folder = arg.get("path", "").rstrip("/").lower()
    recursive = arg.get("recursive", False)
    entries, folders = [], set()
    for path in sorted(standin.files):
        if not path.lower().startswith(folder + "/"):
            continue
        rest = path[len(folder) + 1:]
        if "/" in rest and not recursive:
            sub = path[:len(folder) + 1 + rest.index("/")]
            if sub.lower() not in folders:
                folders.add(sub.lower())
                entries.append({".tag": "folder", "name": sub.rsplit("/", 1)[-1], "path_lower": sub.lower(),
                                "path_display": sub, "id": "id:" + hashlib.sha1(sub.lower().encode()).hexdigest()[:22]})
            continue
        entries.append(standin.metadata(path))
    if folder and not entries:
        return _not_found()
    return 200, {"entries": entries, "cursor": "cursor-" + secrets.token_hex(4), "has_more": False}


def _download(standin: DropboxStandIn, arg: dict[str, Any], data: bytes) -> tuple[Any, ...]:
    path = standin.find(arg["path"])
    if path is None:
        return _not_found()
    return 200, standin.metadata(path), standin.files[path]


def _current_account(standin: DropboxStandIn, arg: Any, data: bytes) -> tuple[int, Any]:
    given, surname = ACCOUNT_NAME.split(" ", 1)
    return 200, {
        "account_id": "dbid:" + "A" * 35,
        "name": {"given_name": given, "surname": surname, "familiar_name": given, "display_name": ACCOUNT_NAME,
                 "abbreviated_name": "TA"},
        "email": "test@example.com", "email_verified": True, "disabled": False, "locale": "en",
        "referral_link": "https://db.tt/test", "is_paired": False, "account_type": {".tag": "basic"},
        "root_info": {".tag": "user", "root_namespace_id": "1", "home_namespace_id": "1"}, "country": "PL"}


ROUTES = {
    "/2/files/upload": _upload,
    "/2/files/upload_session/start": _session_start,
    "/2/files/upload_session/append_v2": _session_append,
    "/2/files/upload_session/finish": _session_finish,
    "/2/files/list_folder": _list_folder,
    "/2/files/download": _download,
    "/2/users/get_current_account": _current_account,
}
