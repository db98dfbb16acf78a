""" Zato's cloud article, end to end (docs/cloud-dropbox.md): REST and FTP to Dropbox. The
article's three services (docs/examples/cloud_dropbox/, unchanged apart from the blanks the
article leaves) in a server with the ftp and dropbox plugins switched on; a REST channel for
uploads, a real FTP server (pyftpdlib, plain and FTPS) polled by an interval job, and the
Dropbox stand-in under the real SDK. Files arrive byte-identical; nothing is deleted from the
FTP server before Dropbox has it; a file that keeps failing is reported by name. """

from __future__ import annotations

import inspect
import os
import shutil
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trio

from zato.plugin_api import admin_auth, create_test_server_dir, make_test_certificates, run_server

pytest.importorskip("pyftpdlib", reason="pyftpdlib (a dev dependency) runs the FTP server")
from zato_plugin_dropbox.testing import ACCESS_TOKEN, DropboxStandIn  # noqa: E402
from zato_plugin_ftp.testing import PASSWORD, FTPPeer  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples" / "cloud_dropbox"
DROPBOX_DIR = "/from-zato"
MAX_BODY = 32 * 1024 * 1024


@pytest.fixture
def dropbox():
    with DropboxStandIn() as server, server.pointed_at():
        yield server


@pytest.fixture(params=["ftp", "ftps"])
def ftp(request, tmp_path):
    certificates = make_test_certificates(tmp_path / "ftp-tls", "Zato FTP test CA") if request.param == "ftps" else None
    with FTPPeer(tmp_path / "ftp-home", certificates=certificates) as peer:
        yield peer


@pytest.fixture
def plain_ftp(tmp_path):
    with FTPPeer(tmp_path / "ftp-home") as peer:
        yield peer


class Article:
    """ The running server of the article and an admin client (`server`, `admin`). """

    def __init__(self, server, admin: httpx.AsyncClient) -> None:
        self.server, self.admin = server, admin

    async def every_second(self, service: str = "api.channel.scheduler.upload") -> None:
        """ The article's interval job (here each second, not each minute). """
        reply = await self.admin.post("/zato/api/objects/scheduler", json={
            "name": "ftp-to-dropbox", "job_type": "interval_based", "service": service, "seconds": 1})
        assert reply.status_code == 201, reply.text

    async def runs(self) -> list[dict]:
        reply = await self.admin.get("/zato/api/scheduler/jobs/ftp-to-dropbox/history", params={"limit": 100})
        assert reply.status_code == 200, reply.text
        return reply.json()["runs"]


@asynccontextmanager
async def article_server(tmp_path: Path, dropbox: DropboxStandIn, ftp: FTPPeer | None, **dropbox_fields):
    """ The server of the article: its services deployed from pickup/, the Dropbox connection, the
    FTP connection and the REST channel created through the admin API, as in web-admin. """
    base_dir = create_test_server_dir(tmp_path / "server", plugins={"ftp": True, "dropbox": True},
                                      main={"max_body_size": MAX_BODY})
    for example in EXAMPLES.glob("*.py"):
        shutil.copy(example, base_dir / "pickup" / example.name)
    async with run_server(base_dir) as server, httpx.AsyncClient(
            base_url=server.address, auth=admin_auth(), timeout=60, headers={"content-type": "application/json"}) as admin:
        reply = await admin.post("/zato/api/objects/cloud_dropbox", json={
            "name": "My Connection", "user_agent": "ACME-Article/1.0", "default_directory": DROPBOX_DIR,
            "tls_ca_file": str(dropbox.ca_file), **dropbox_fields})
        assert reply.status_code == 201, reply.text
        reply = await admin.put("/zato/api/objects/cloud_dropbox/My%20Connection/secrets/oauth2_access_token",
                                json={"value": ACCESS_TOKEN})
        assert reply.status_code == 204, reply.text
        if ftp is not None:
            definition = ftp.definition("My FTP Connection")
            definition.pop("password")
            reply = await admin.post("/zato/api/objects/outgoing_ftp", json=definition)
            assert reply.status_code == 201, reply.text
            reply = await admin.put("/zato/api/objects/outgoing_ftp/My%20FTP%20Connection/secrets/password",
                                    json={"value": PASSWORD})
            assert reply.status_code == 204, reply.text
        reply = await admin.post("/zato/api/objects/channel_rest", json={
            "name": "upload", "url_path": "/upload", "service": "api.channel.rest.upload", "methods": ["POST"],
            "data_format": "text"})
        assert reply.status_code == 201, reply.text
        yield Article(server, admin)


async def wait_until(condition, what: str, timeout: float = 20) -> None:
    """ Waits until `condition()` (a plain or an async function) is true. """
    with trio.move_on_after(timeout):
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def ftp_files(ftp: FTPPeer) -> set[str]:
    return {path.name for path in ftp.home.iterdir() if path.is_file()}


# ################################################################################################
# REST


UPLOADS = {
    "binary.bin": bytes(range(256)) * 64,
    "empty.txt": b"",
    "big.bin": os.urandom(20 * 1024 * 1024),
    "zażółć gęślą jaźń €.txt": "Zażółć gęślą jaźń\r\n€\n".encode("utf-8"),
}


async def test_curl_uploads_land_in_dropbox_byte_identical(tmp_path, dropbox):
    async with article_server(tmp_path, dropbox, None) as article:
        async with httpx.AsyncClient(base_url=article.server.address, timeout=120) as client:
            for file_name, data in UPLOADS.items():
                # what `curl -XPOST --data-binary @file 'http://.../upload?file_name=...'` sends
                reply = await client.post(f"/upload?file_name={quote(file_name)}", content=data,
                                          headers={"content-type": "application/x-www-form-urlencoded"})
                assert reply.status_code == 200, (file_name, reply.text)
    assert dropbox.files.keys() == {f"{DROPBOX_DIR}/{name}" for name in UPLOADS}
    for file_name, data in UPLOADS.items():
        assert dropbox.files[f"{DROPBOX_DIR}/{file_name}"] == data, file_name


async def test_an_upload_over_max_body_size_is_refused_and_nothing_reaches_dropbox(tmp_path, dropbox):
    async with article_server(tmp_path, dropbox, None) as article:
        async with httpx.AsyncClient(base_url=article.server.address, timeout=120) as client:
            reply = await client.post("/upload?file_name=huge.bin", content=b"x" * (MAX_BODY + 1))
    assert reply.status_code == 413 and str(MAX_BODY) in reply.text
    assert dropbox.files == {}


# ################################################################################################
# FTP through the scheduler


async def test_the_interval_job_moves_every_ftp_file_to_dropbox_and_deletes_it(tmp_path, dropbox, ftp):
    files = {"invoice-1.pdf": b"%PDF-1.4\n\x00\xff binary", "empty.csv": b"", "łódź.txt": "ąę\n".encode("utf-8")}
    for name, data in files.items():
        (ftp.home / name).write_bytes(data)
    async with article_server(tmp_path, dropbox, ftp) as article:
        await article.every_second()
        await wait_until(lambda: not ftp_files(ftp), "every FTP file uploaded and deleted")
        assert {path: data for path, data in dropbox.files.items()} == \
            {f"{DROPBOX_DIR}/{name}": data for name, data in files.items()}
        # a file that arrives later goes with the next run
        (ftp.home / "later.xml").write_bytes(b"<later/>")
        await wait_until(lambda: not ftp_files(ftp), "the later file uploaded and deleted")
        assert dropbox.files[f"{DROPBOX_DIR}/later.xml"] == b"<later/>"
        assert all(run["outcome"] == "ok" for run in await article.runs() if run["outcome"] != "running")


# ################################################################################################
# Nothing lost


async def test_nothing_is_deleted_while_dropbox_fails_or_is_down_and_the_next_run_uploads_it(tmp_path, dropbox,
                                                                                           plain_ftp):
    ftp = plain_ftp
    (ftp.home / "report.csv").write_bytes(b"a,b\n1,2\n")
    dropbox.fail(10**6, status=503)  # Dropbox's trouble, every call
    async with article_server(tmp_path, dropbox, ftp, max_retries_on_error=0) as article:
        await article.every_second()

        async def failed_twice() -> bool:
            return sum(run["outcome"] == "error" for run in await article.runs()) >= 2
        await wait_until(failed_twice, "two failed runs")
        assert ftp_files(ftp) == {"report.csv"} and dropbox.files == {}
        errors = [run["error"] for run in await article.runs() if run["outcome"] == "error"]
        assert all("'/from-zato/report.csv'" in error and "503" in error for error in errors), errors

        dropbox.fail(0)
        dropbox.stop()  # now Dropbox cannot be reached at all

        async def failed_unreachable() -> bool:
            return any("cannot reach Dropbox" in (run["error"] or "") for run in await article.runs())
        await wait_until(failed_unreachable, "a run failing on Dropbox unreachable")
        assert ftp_files(ftp) == {"report.csv"} and dropbox.files == {}

        dropbox.start()  # back, at the same address
        await wait_until(lambda: not ftp_files(ftp), "the file uploaded once Dropbox is back")
        assert dropbox.files == {f"{DROPBOX_DIR}/report.csv": b"a,b\n1,2\n"}


async def test_a_file_that_keeps_failing_is_reported_by_name_and_moved_aside(tmp_path, dropbox, plain_ftp, caplog):
    # The article's service stops at the first failing file, so a file Dropbox never accepts would
    # hold back the rest; the production variant in the docs goes on with the others and moves such
    # a file to /failed after three runs, logging its name.
    ftp = plain_ftp
    (ftp.home / "Desktop.ini").write_bytes(b"[.ShellClassInfo]\n")  # Dropbox refuses the name
    (ftp.home / "orders.json").write_bytes(b'{"orders": []}')
    async with article_server(tmp_path, dropbox, ftp) as article:
        await article.every_second("api.channel.scheduler.upload.quarantine")
        await wait_until((ftp.home / "failed" / "Desktop.ini").exists, "the refused file moved to /failed")
        assert ftp_files(ftp) == set() and dropbox.files == {f"{DROPBOX_DIR}/orders.json": b'{"orders": []}'}
        assert (ftp.home / "failed" / "Desktop.ini").read_bytes() == b"[.ShellClassInfo]\n"
        assert not list((ftp.home / ".attempts").iterdir())  # no counts left behind
    warnings = [r.getMessage() for r in caplog.records if "/Desktop.ini not uploaded (attempt" in r.getMessage()]
    assert len(warnings) == 2 and "disallowed_name" in warnings[0]
    [error] = [r.getMessage() for r in caplog.records if "/Desktop.ini not uploaded after 3 attempts" in r.getMessage()]
    assert "moved to /failed" in error
