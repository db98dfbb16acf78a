""" FTPConnection against a real pyftpdlib server on 127.0.0.1, plain FTP and explicit FTPS (with
certificate verification on): every method, the errors a user sees, the pool under concurrent
use, dropped control connections replaced, large streamed transfers, and async services. """

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import trio

from ftp_fixtures import PASSWORD, USER, FTPPeer, ftp_certificates, ftp_peer, ftps_peer  # noqa: F401
from zato.plugin_api import BlockingCallError, OutgoingError
from zato_plugin_ftp import DestinationExists, DirectoryExists, FTPConnection, FTPError, ResourceNotFound


@pytest.fixture(params=["ftp", "ftps"])
def peer(request, tmp_path, ftp_certificates):
    certificates = ftp_certificates if request.param == "ftps" else None
    with FTPPeer(tmp_path / "home", certificates=certificates) as peer:
        yield peer


@pytest.fixture
def conn(peer):
    connection = FTPConnection(None, peer.definition())
    yield connection
    connection.close()


# ################################################################################################
# Every method


def test_files_round_trip_and_land_on_the_server(conn, peer):
    conn.setbytes("data.bin", b"\x00\x01binary\xff")
    assert (peer.home / "data.bin").read_bytes() == b"\x00\x01binary\xff"
    assert conn.getbytes("data.bin") == b"\x00\x01binary\xff"
    conn.settext("/note.txt", "zażółć gęślą jaźń")
    assert (peer.home / "note.txt").read_text("utf-8") == "zażółć gęślą jaźń"
    assert conn.gettext("note.txt") == "zażółć gęślą jaźń"
    assert conn.gettext("note.txt", encoding="latin-1") == "zażółć gęślą jaźń".encode().decode("latin-1")
    conn.setbytes("data.bin", b"replaced")
    assert conn.getbytes("data.bin") == b"replaced"
    with pytest.raises(TypeError, match="settext for str"):
        conn.setbytes("x.txt", "text")  # type: ignore[arg-type]


def test_listdir_exists_isdir_isfile_and_getinfo(conn, peer):
    (peer.home / "in").mkdir()
    (peer.home / "in" / "a.csv").write_bytes(b"12345")
    (peer.home / "in" / "sub").mkdir()
    stamp = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc).timestamp()
    os.utime(peer.home / "in" / "a.csv", (stamp, stamp))
    assert conn.listdir("/") == ["in"]
    assert conn.listdir("in") == ["a.csv", "sub"]
    assert conn.listdir("in/sub") == []
    assert conn.exists("in/a.csv") and conn.exists("in/sub") and not conn.exists("in/nothing")
    assert conn.isdir("in/sub") and not conn.isdir("in/a.csv") and not conn.isdir("in/nothing")
    assert conn.isfile("in/a.csv") and not conn.isfile("in/sub") and not conn.isfile("in/nothing")
    info = conn.getinfo("in/a.csv")
    assert (info.name, info.is_dir, info.is_file, info.size) == ("a.csv", False, True, 5)
    assert info.modified == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    directory = conn.getinfo("in/sub")
    assert (directory.name, directory.is_dir, directory.size) == ("sub", True, None)
    with pytest.raises(ResourceNotFound, match="'in/nothing'"):
        conn.getinfo("in/nothing")


def test_directories_are_made_and_removed(conn, peer):
    conn.makedir("one")
    assert (peer.home / "one").is_dir()
    with pytest.raises(DirectoryExists, match="makedir 'one'.*exists already"):
        conn.makedir("one")
    conn.makedir("one", recreate=True)
    conn.makedirs("one/two/three")
    assert (peer.home / "one" / "two" / "three").is_dir()
    with pytest.raises(DirectoryExists):
        conn.makedirs("one/two/three")
    conn.makedirs("one/two/three", recreate=True)
    conn.makedirs("/abs/path")
    assert (peer.home / "abs" / "path").is_dir()
    conn.removedir("one/two/three")
    assert not (peer.home / "one" / "two" / "three").exists()
    conn.setbytes("one/two/file", b"x")
    with pytest.raises(FTPError, match=r"removedir 'one/two'.* 550 ") as info:
        conn.removedir("one/two")  # not empty
    assert not isinstance(info.value, ResourceNotFound), info.value
    with pytest.raises(ResourceNotFound, match="removedir 'gone'"):
        conn.removedir("gone")


def test_remove_and_move(conn, peer):
    conn.setbytes("a.txt", b"a")
    conn.setbytes("b.txt", b"b")
    conn.move("a.txt", "c.txt")
    assert not (peer.home / "a.txt").exists() and (peer.home / "c.txt").read_bytes() == b"a"
    with pytest.raises(DestinationExists, match="move 'b.txt'.*overwrite=True"):
        conn.move("c.txt", "b.txt")
    conn.move("c.txt", "b.txt", overwrite=True)
    assert (peer.home / "b.txt").read_bytes() == b"a"
    conn.makedir("dir")
    conn.move("b.txt", "dir/b.txt")
    assert conn.listdir("dir") == ["b.txt"]
    conn.remove("dir/b.txt")
    assert not (peer.home / "dir" / "b.txt").exists()
    with pytest.raises(ResourceNotFound, match="move 'nothing.txt'"):
        conn.move("nothing.txt", "other.txt")


def test_relative_paths_are_relative_to_default_directory(peer):
    (peer.home / "incoming" / "2024").mkdir(parents=True)
    with FTPConnectionFor(peer, default_directory="/incoming") as conn:
        conn.setbytes("2024/x.txt", b"x")
        assert (peer.home / "incoming" / "2024" / "x.txt").read_bytes() == b"x"
        assert conn.listdir(".") == ["2024"] and conn.listdir("2024") == ["x.txt"]
        assert conn.listdir("/") == ["incoming"]  # absolute paths are the server's own
        with pytest.raises(ResourceNotFound) as info:
            conn.getbytes("x.txt")
        assert "looked for as '/incoming/x.txt' (relative to default_directory '/incoming')" in str(info.value)


def test_active_mode_transfers_work_too(peer):
    with FTPConnectionFor(peer, passive=False) as conn:  # PORT: the server connects back for the data
        conn.setbytes("active.txt", b"through PORT")
        assert conn.getbytes("active.txt") == b"through PORT" and conn.listdir("/") == ["active.txt"]


def test_ping_and_close(conn, peer):
    conn.ping()
    assert conn.statistics() == {"idle": 1, "in_use": 0, "pool_size": 5, "closed": False}
    peer.wait_for_open(1)
    conn.close()
    assert conn.statistics()["closed"] and conn.statistics()["idle"] == 0
    peer.wait_for_open(0)  # the server saw the control connection go
    with pytest.raises(FTPError, match="was closed.*look it up again"):
        conn.listdir("/")


def test_a_server_without_mlst_is_asked_with_nlst_size_and_mdtm(tmp_path):
    with FTPPeer(tmp_path / "old", mlst=False) as peer:
        (peer.home / "d").mkdir()
        (peer.home / "d" / "f.txt").write_bytes(b"abc")
        with FTPConnectionFor(peer) as conn:
            assert conn.listdir("d") == ["f.txt"]
            info = conn.getinfo("d/f.txt")
            assert (info.is_dir, info.size) == (False, 3)
            assert abs(info.modified - datetime.now(timezone.utc)) < timedelta(minutes=1)
            assert conn.isdir("d") and conn.isfile("d/f.txt") and not conn.exists("d/none")
            with pytest.raises(ResourceNotFound):
                conn.listdir("nowhere")


# ################################################################################################
# Errors


def test_a_missing_file_is_resource_not_found_naming_the_connection_operation_path_and_reply(conn, peer):
    with pytest.raises(ResourceNotFound) as info:
        conn.getbytes("reports/missing.csv")
    message = str(info.value)
    assert message.startswith("outgoing ftp 'test ftp': download 'reports/missing.csv' on ftp"), message
    assert "550 No such file or directory" in message and info.value.reply.startswith("550")
    assert isinstance(info.value, FTPError) and isinstance(info.value, OutgoingError)
    with pytest.raises(ResourceNotFound, match=r"remove 'missing.csv'.*550"):
        conn.remove("missing.csv")
    with pytest.raises(ResourceNotFound, match=r"listdir 'nowhere'"):
        conn.listdir("nowhere")


def test_a_wrong_password_is_530_and_says_what_to_set(peer):
    with FTPConnectionFor(peer, password="wrong") as conn:
        with pytest.raises(FTPError) as info:
            conn.listdir("/")
    message = str(info.value)
    assert "530" in message and f"user {USER!r}" in message and "check user and password" in message, message
    assert "secrets/password" in message and "wrong" not in message and PASSWORD not in message
    assert not isinstance(info.value, ResourceNotFound)


def test_ftps_verifies_the_certificate_and_a_wrong_ca_is_refused(ftps_peer, ftp_certificates):
    with FTPConnectionFor(ftps_peer, tls_ca_file=str(ftp_certificates.other_ca_file)) as conn:
        with pytest.raises(FTPError, match="TLS certificate of 127.0.0.1:.* could not be verified.*set tls_ca_file"):
            conn.ping()
    with FTPConnectionFor(ftps_peer, tls_ca_file="") as conn:  # the system's CAs do not know the test CA
        with pytest.raises(FTPError, match="could not be verified"):
            conn.ping()
    with FTPConnectionFor(ftps_peer) as conn:  # the right CA: verified, and the data channel works
        conn.setbytes("secret.txt", b"over TLS")
        assert conn.getbytes("secret.txt") == b"over TLS"
    with FTPConnectionFor(ftps_peer, tls="none") as conn:  # the server requires TLS
        with pytest.raises(FTPError, match="the server replied 5"):
            conn.ping()


def test_nothing_listening_says_what_to_check(peer):
    port = peer.port
    peer.stop_sync()
    with FTPConnectionFor(peer, port=port) as conn:
        with pytest.raises(FTPError, match=r"cannot connect to 127.0.0.1:\d+ .*is the FTP server running"):
            conn.ping()


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("host", "", "host is empty"), ("port", 70000, "port = 70000 is not a TCP port"),
    ("tls", "implicit", "tls 'implicit' is not one of none, explicit"), ("pool_size", 0, "pool_size = 0"),
    ("timeout", "soon", "timeout = 'soon'"), ("tls_ca_file", "/no/such/ca.pem", "tls_ca_file '/no/such/ca.pem'"),
])
def test_a_definition_that_cannot_work_is_refused_naming_the_field(field, value, expected):
    definition = {"name": "bad", "host": "127.0.0.1", "tls": "explicit" if field == "tls_ca_file" else "none",
                  field: value}
    with pytest.raises(ValueError, match=expected):
        FTPConnection(None, definition)


# ################################################################################################
# The pool, dropped connections


def test_the_pool_serves_many_threads_with_at_most_pool_size_control_connections(peer):
    for number in range(6):
        (peer.home / f"file-{number}.txt").write_text(f"content {number}")
    peer.reset_peak()
    errors: list[BaseException] = []
    results: dict[tuple[int, int], bytes] = {}
    with FTPConnectionFor(peer, pool_size=3) as conn:
        def work(thread: int) -> None:
            try:
                for round_ in range(4):
                    number = (thread + round_) % 6
                    results[thread, round_] = conn.getbytes(f"file-{number}.txt")
                    conn.setbytes(f"out-{thread}-{round_}.txt", b"x" * (thread + 1))
                    assert f"file-{number}.txt" in conn.listdir("/")
            except BaseException as exc:  # noqa: BLE001 (reported below)
                errors.append(exc)
        threads = [threading.Thread(target=work, args=(thread,)) for thread in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        assert len(results) == 40
        assert all(data == f"content {(t + r) % 6}".encode() for (t, r), data in results.items())
        assert len([p for p in peer.home.iterdir() if p.name.startswith("out-")]) == 40
        assert 1 < peer.peak <= 3, peer.peak  # used concurrently, never more than pool_size
        assert conn.statistics()["idle"] <= 3 and conn.statistics()["in_use"] == 0


def test_control_connections_the_server_dropped_are_replaced_and_reads_retried(peer):
    (peer.home / "a.txt").write_bytes(b"a")
    with FTPConnectionFor(peer) as conn:
        assert conn.getbytes("a.txt") == b"a"
        logins = peer.logins
        peer.stop_sync()
        peer.start_sync()  # same port; the pooled control connection is dead (EOF or reset)
        assert conn.getbytes("a.txt") == b"a"
        assert conn.listdir("/") == ["a.txt"]
        conn.setbytes("b.txt", b"b")  # nothing had been sent: an upload is retried too
        assert peer.logins == logins + 1
        assert conn.statistics()["idle"] == 1


def test_a_421_after_the_servers_idle_timeout_is_replaced(tmp_path):
    with FTPPeer(tmp_path / "idle", idle_timeout=0.3) as peer:
        (peer.home / "a.txt").write_bytes(b"a")
        with FTPConnectionFor(peer) as conn:
            assert conn.getbytes("a.txt") == b"a"
            peer.wait_for_open(0)  # the server said 421 and closed it
            logins = peer.logins
            assert conn.exists("a.txt") and conn.getbytes("a.txt") == b"a"
            assert peer.logins == logins + 1


def test_an_upload_cut_off_half_way_is_not_repeated(peer):
    class StopsTheServer(io.BytesIO):
        """ The server goes away once the first block was sent. """
        def read(self, size=-1):
            if self.tell() > 0 and peer.port:
                peer.stop_sync()
            return super().read(size)

    with FTPConnectionFor(peer) as conn:
        conn.ping()
        logins = peer.logins
        with pytest.raises(FTPError, match="upload 'half.bin'.*lost during the transfer.*not repeated"):
            conn.upload("half.bin", StopsTheServer(b"x" * (8 * 1024 * 1024)), chunk_size=64 * 1024)
        assert peer.logins == logins  # no new login: nothing was tried again
        peer.start_sync()
        conn.ping()  # the broken control connection was not kept


def test_close_ends_a_call_in_flight_and_says_so(peer):
    (peer.home / "big.bin").write_bytes(b"x" * (4 * 1024 * 1024))
    conn = FTPConnection(None, peer.definition())
    started, outcome = threading.Event(), []

    class SlowFile(io.BytesIO):
        def write(self, data):
            started.set()
            time.sleep(0.01)
            return super().write(data)

    def download():
        try:
            conn.download("big.bin", SlowFile())
        except FTPError as exc:
            outcome.append(exc)
    thread = threading.Thread(target=download)
    thread.start()
    assert started.wait(5)
    conn.close()  # e.g. the definition was deleted
    thread.join(10)
    assert not thread.is_alive()
    assert len(outcome) == 1 and "closed while in use" in str(outcome[0]), outcome
    assert conn.statistics() == {"idle": 0, "in_use": 0, "pool_size": 5, "closed": True}


# ################################################################################################
# Large files, streamed


def test_large_files_stream_byte_identical(peer, tmp_path):
    source = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    with source.open("wb") as file:
        for number in range(20):
            file.write(bytes([number]) + block[1:])
    with FTPConnectionFor(peer, timeout=30) as conn:
        with source.open("rb") as file:
            conn.upload("big.bin", file)
        assert (peer.home / "big.bin").stat().st_size == 20 * 1024 * 1024
        target = tmp_path / "back.bin"
        with target.open("wb") as file:
            conn.download("big.bin", file)
        assert conn.getinfo("big.bin").size == 20 * 1024 * 1024
    digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()  # noqa: E731
    assert digest(target) == digest(source) == digest(peer.home / "big.bin")


# ################################################################################################
# Async services


async def test_from_the_trio_loop_calls_are_refused_and_run_works(ftp_peer):
    (ftp_peer.home / "a.txt").write_bytes(b"a")
    conn = FTPConnection(None, ftp_peer.definition())
    try:
        with pytest.raises(BlockingCallError, match=r"listdir\(\) blocks.*await conn.run"):
            conn.listdir("/")
        assert await conn.run(lambda c: c.listdir("/")) == ["a.txt"]
        assert await conn.run(lambda c, path: c.getbytes(path), "a.txt") == b"a"
        with pytest.raises(ResourceNotFound):
            await conn.run(lambda c: c.getbytes("none"))
        async with trio.open_nursery() as nursery:  # several at once, each in its own thread
            for number in range(8):
                nursery.start_soon(conn.run, lambda c, n=number: c.setbytes(f"{n}.txt", b"n"))
        assert len(list(ftp_peer.home.glob("[0-9].txt"))) == 8
    finally:
        await trio.to_thread.run_sync(conn.close)


# ################################################################################################


class FTPConnectionFor:
    """ `with FTPConnectionFor(peer, **fields) as conn`: a connection to `peer`, closed afterwards. """

    def __init__(self, peer: FTPPeer, **fields) -> None:
        self.connection = FTPConnection(None, peer.definition(**fields))

    def __enter__(self) -> FTPConnection:
        return self.connection

    def __exit__(self, *exc_info) -> None:
        self.connection.close()
