""" Dropbox connections with the real SDK against the stand-in: uploads (small, empty, binary,
non-ASCII names, upload sessions), listing, downloads, ping, the errors users act on (401, 409,
429), token refresh, TLS, headers, and the async side. """

from __future__ import annotations

import io
import os
import time

import dropbox
import pytest
import trio

import zato_plugin_dropbox.connection as connection_module
from dropbox_fixtures import USER_AGENT, connect, standin  # noqa: F401
from zato.plugin_api import BlockingCallError, OutgoingError
from zato_plugin_dropbox import check_dropbox
from zato_plugin_dropbox.connection import (
    DropboxAuthError, DropboxPathError, DropboxRateLimitError, DropboxUnavailableError,
)
from zato_plugin_dropbox.testing import ACCOUNT_NAME, APP_KEY, APP_SECRET, REFRESH_TOKEN, content_hash

MB = 1024 * 1024


def routes(standin) -> list[str]:
    return [path for path, _ in standin.requests]


def test_uploads_small_empty_binary_and_non_ascii_files_under_the_default_directory(standin):
    conn = connect(standin, default_directory="/reports/").conn
    binary = bytes(range(256)) * 4
    assert conn.upload("a.txt", b"hello").path_display == "/reports/a.txt"
    assert conn.upload("empty.bin", b"").size == 0
    conn.upload("data.bin", binary)
    meta = conn.upload("Zażółć gęślą jaźń ☃.txt", "żółw".encode("utf-8"))
    assert meta.path_display == "/reports/Zażółć gęślą jaźń ☃.txt" and meta.content_hash == content_hash("żółw".encode())
    assert standin.files == {"/reports/a.txt": b"hello", "/reports/empty.bin": b"", "/reports/data.bin": binary,
                             "/reports/Zażółć gęślą jaźń ☃.txt": "żółw".encode("utf-8")}
    assert set(routes(standin)) == {"/2/files/upload"}  # below the threshold: one call each


def test_a_file_object_uploads_too_and_str_is_refused(standin):
    conn = connect(standin).conn
    conn.upload("/from-file.bin", io.BytesIO(b"\x00\xff" * 100))
    assert standin.files["/from-file.bin"] == b"\x00\xff" * 100
    with pytest.raises(TypeError, match=r"data is str; give bytes"):
        conn.upload("/text.txt", "not bytes")


@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "file object"])
def test_a_large_upload_goes_in_an_upload_session_byte_identical(standin, monkeypatch, as_file):
    monkeypatch.setattr(connection_module, "UPLOAD_SESSION_THRESHOLD", 1 * MB)
    monkeypatch.setattr(connection_module, "UPLOAD_CHUNK_SIZE", 1 * MB)
    data = os.urandom(3 * MB + 12345)
    conn = connect(standin, default_directory="/big").conn
    meta = conn.upload("three.bin", io.BytesIO(data) if as_file else data)
    assert standin.files["/big/three.bin"] == data and meta.size == len(data)
    assert routes(standin) == ["/2/files/upload_session/start"] + ["/2/files/upload_session/append_v2"] * 2 + \
        ["/2/files/upload_session/finish"]
    assert not standin.sessions


def test_lists_and_downloads_through_the_client(standin):
    client = connect(standin).conn.client
    assert isinstance(client, dropbox.Dropbox)
    client.files_upload(b"one", "/in/1.txt")
    client.files_upload(b"two", "/in/sub/2.txt")
    listing = client.files_list_folder("/in")
    assert sorted((type(e).__name__, e.name) for e in listing.entries) == [("FileMetadata", "1.txt"),
                                                                           ("FolderMetadata", "sub")]
    meta, response = client.files_download("/in/sub/2.txt")
    assert (meta.path_display, response.content) == ("/in/sub/2.txt", b"two")
    with pytest.raises(DropboxPathError, match=r"files/download '/in/nothing.txt': Dropbox refused it \(409 path/not_found") as info:
        client.files_download("/in/nothing.txt")
    assert info.value.error.get_path().is_not_found()  # still the SDK's ApiError, with its error


def test_ping_is_the_current_account_and_settings_reach_dropbox(standin):
    conn = connect(standin, http_headers="X-Request-Source: zato\nX-Team: integrations").conn
    assert conn.ping() == ACCOUNT_NAME
    (path, headers), = standin.requests
    assert path == "/2/users/get_current_account"
    assert headers["User-Agent"].startswith(f"{USER_AGENT}/OfficialDropboxPythonSDKv2/")
    assert (headers["X-Request-Source"], headers["X-Team"]) == ("zato", "integrations")


def test_an_expired_token_says_to_set_a_new_one_with_the_secrets_call(standin):
    conn = connect(standin).conn
    standin.expire()
    with pytest.raises(DropboxAuthError) as info:
        conn.upload("a.txt", b"x")
    message = str(info.value)
    assert "self.cloud.dropbox['My Connection']: files/upload" in message
    assert "expired_access_token" in message
    assert "set a new token with PUT /zato/api/objects/cloud_dropbox/My%20Connection/secrets/oauth2_access_token" in message
    assert isinstance(info.value, OutgoingError) and isinstance(info.value, dropbox.exceptions.AuthError)


def test_an_unknown_token_and_no_token_at_all(standin):
    with pytest.raises(DropboxAuthError, match="invalid_access_token"):
        connect(standin, oauth2_access_token="revoked").conn.ping()
    with pytest.raises(DropboxAuthError, match=r"users_get_current_account: no credentials: .*set a token with PUT /zato/api/objects/cloud_dropbox/My%20Connection/secrets/oauth2_access_token"):
        connect(standin, oauth2_access_token="").conn.ping()
    assert routes(standin) == ["/2/users/get_current_account"]  # no call without credentials


def test_a_path_conflict_carries_dropboxs_error_summary(standin, monkeypatch):
    conn = connect(standin).conn
    conn.upload("/a.txt", b"first")
    with pytest.raises(DropboxPathError) as info:
        conn.upload("/A.TXT", b"second")  # Dropbox's paths ignore case
    assert info.value.error_summary.startswith("path/conflict/file")
    assert "files/upload '/A.TXT': Dropbox refused it (409 path/conflict/file" in str(info.value)
    assert "overwrite=True" in str(info.value)
    conn.upload("/a.txt", b"second", overwrite=True)
    assert standin.files == {"/a.txt": b"second"}
    # a name Dropbox never stores is refused whatever the mode, naming the file
    with pytest.raises(DropboxPathError, match=r"files/upload '/reports/Desktop.ini': Dropbox refused it "
                                               r"\(409 path/disallowed_name"):
        conn.upload("/reports/Desktop.ini", b"[.ShellClassInfo]", overwrite=True)
    # the same from an upload session's finish
    monkeypatch.setattr(connection_module, "UPLOAD_SESSION_THRESHOLD", 10)
    monkeypatch.setattr(connection_module, "UPLOAD_CHUNK_SIZE", 8)
    with pytest.raises(DropboxPathError,
                       match=r"upload_session/finish_?v?\d* '/a.txt': Dropbox refused it \(409 path/conflict"):
        conn.upload("/a.txt", b"0123456789abcdef")


def test_rate_limiting_is_retried_after_retry_after_then_a_clear_error(standin):
    conn = connect(standin, max_retries_on_rate_limit=2).conn
    standin.rate_limit(1, retry_after=1)
    started = time.monotonic()
    assert conn.ping() == ACCOUNT_NAME
    assert time.monotonic() - started >= 1.0  # waited as Retry-After said
    standin.requests.clear()
    standin.rate_limit(10, retry_after=0)
    with pytest.raises(DropboxRateLimitError) as info:
        conn.ping()
    assert len(standin.requests) == 3  # the call and its 2 retries
    assert "rate limited by Dropbox (429) after 2 retries" in str(info.value)
    assert "max_retries_on_rate_limit in cloud_dropbox 'My Connection'" in str(info.value)


def test_short_lived_tokens_are_refreshed_with_the_app_key_and_refresh_token(standin):
    conn = connect(standin, oauth2_access_token="", app_key=APP_KEY, app_secret=APP_SECRET,
                   oauth2_refresh_token=REFRESH_TOKEN).conn
    assert conn.ping() == ACCOUNT_NAME
    assert routes(standin) == ["/oauth2/token", "/2/users/get_current_account"]
    token = standin.requests[1][1]["Authorization"].removeprefix("Bearer ")
    assert token.startswith("short-lived-")
    # an expired short-lived token is refreshed and the call retried
    standin.expire(token)
    conn.upload("/after-refresh.txt", b"ok")
    assert standin.files["/after-refresh.txt"] == b"ok"
    assert routes(standin)[2:] == ["/2/files/upload", "/oauth2/token", "/2/files/upload"]


def test_a_refused_refresh_token_says_what_to_set(standin):
    conn = connect(standin, oauth2_access_token="", app_key=APP_KEY, app_secret=APP_SECRET,
                   oauth2_refresh_token="revoked").conn
    with pytest.raises(DropboxAuthError, match=r"refused the refresh token.*secrets/oauth2_refresh_token"):
        conn.ping()


def test_tls_is_verified_against_tls_ca_file_only(standin):
    # Without the stand-in's CA the system's (or REQUESTS_CA_BUNDLE's) do not trust it
    with pytest.raises(DropboxUnavailableError, match=r"cannot reach Dropbox \(SSLError"):
        connect(standin, tls_ca_file="").conn.ping()
    with pytest.raises(ValueError, match=r"tls_ca_file = '/no/such.pem' is not a file"):
        connect(standin, tls_ca_file="/no/such.pem")


def test_bad_definitions_are_refused_naming_the_field(standin):
    assert check_dropbox({"http_headers": "X-Good: 1\nno colon here"}, partial=False) == [
        {"field": "http_headers", "error": "line 2 ('no colon here') is not `Name: value`; give one header a line"}]
    assert [e["field"] for e in check_dropbox({"default_directory": "reports"}, partial=False)] == ["default_directory"]
    assert check_dropbox({"http_headers": "A: b", "default_directory": "/r"}, partial=False) == []
    with pytest.raises(ValueError, match="oauth2_refresh_token is set but app_key is empty"):
        connect(standin, oauth2_refresh_token=REFRESH_TOKEN)


def test_a_closed_connection_refuses_calls_and_releases_its_sockets(standin):
    conn = connect(standin).conn
    conn.ping()
    assert standin.connections_open == 1
    conn.close()
    deadline = time.monotonic() + 5
    while standin.connections_open and time.monotonic() < deadline:
        time.sleep(0.02)
    assert standin.connections_open == 0
    with pytest.raises(OutgoingError, match="was closed"):
        conn.ping()


async def test_async_services_use_run_and_await_upload_and_the_loop_is_never_blocked(standin):
    conn = await trio.to_thread.run_sync(connect, standin)
    with pytest.raises(BlockingCallError, match=r"conn\.client blocks, and this is an async def handle"):
        conn.client.files_list_folder("")
    await conn.upload("/async.txt", b"from trio")
    listing = await conn.run(lambda client: client.files_list_folder(""))
    assert [e.name for e in listing.entries] == ["async.txt"]
    assert standin.files == {"/async.txt": b"from trio"}


def test_server_errors_are_retried_max_retries_on_error_times(standin):
    conn = connect(standin, max_retries_on_error=0, timeout=7).conn
    assert conn.client._timeout == 7.0  # the SDK's own setting, from the definition
    standin.fail(1)
    with pytest.raises(OutgoingError, match=r"users/get_current_account: Dropbox answered 500: .*max_retries_on_error = 0 times; try again later; configured in "
                                            r"cloud_dropbox 'My Connection'") as info:
        conn.ping()
    assert isinstance(info.value, dropbox.exceptions.InternalServerError)
    retrying = connect(standin, max_retries_on_error=1).conn
    standin.fail(1)
    assert retrying.ping() == ACCOUNT_NAME  # after the SDK's back-off (under 2 s)
