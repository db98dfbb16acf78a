""" FTP to Dropbox benchmark: files per second and MB/s moved from an FTP server into Dropbox by
the cloud article's services (docs/examples/cloud_dropbox/) in a server, beside a plain script
doing the same transfers with ftplib and the `dropbox` SDK, in the same run.

    .venv/bin/python bench/ftp_dropbox/run.py [--rounds N] [--small-files N] [--large-files N]
                                              [--large-mb N] [--ftp process|thread] [--output PATH]

Both sides move the same files between the same two servers: pyftpdlib (zato_plugin_ftp.testing,
in a child process by default, so that it does not share this process's GIL) and the Dropbox
stand-in (zato_plugin_dropbox.testing, an HTTPS server in this process) under the real SDK.

* **raw**: one worker thread: ftplib login, NLST, then per file RETR to bytes (64 kB blocks, as
  the plugin reads), `files_upload` (overwrite) through a `dropbox.Dropbox` client built as the
  plugin builds it, DELE.
* **platform**: one `POST /zato/api/invoke/api.channel.scheduler.upload` (the article's FTP
  service: listdir, getbytes, `self.invoke('api.connector.dropbox', ...)`, remove), timed until
  the call returns.

Every round checks that each file landed byte-identical and that the FTP directory is empty.
Rounds are interleaved (raw, platform, raw, platform...) after a warm-up round of each. Results go to
bench/results/ftp_dropbox.json.
"""

from __future__ import annotations

import argparse
import ftplib
import io
import json
import os
import platform
import posixpath
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples" / "cloud_dropbox"
DEFAULT_OUTPUT = REPO / "bench" / "results" / "ftp_dropbox.json"
SERVICE = "api.channel.scheduler.upload"
RAW_DIR, PLATFORM_DIR = "/from-script", "/from-zato"
MB = 1_000_000
FTP_BLOCK = 64 * 1024  # what the ftp plugin reads a block at a time (ftplib's default is 8 kB)

# pyftpdlib in a process of its own: prints its port, serves until its stdin closes
FTP_CHILD = """
import logging
import sys
logging.disable(logging.INFO)  # pyftpdlib logs each command
from pathlib import Path
from zato_plugin_ftp.testing import FTPPeer
with FTPPeer(Path(sys.argv[1])) as peer:
    print(peer.port, flush=True)
    sys.stdin.read()
"""


class Stopwatch:
    """ Wall-clock seconds and CPU seconds (this process, and the FTP server's process if it has
    one) of what runs inside `with stopwatch:`. """

    def __init__(self, child_pid: int | None) -> None:
        self.child_pid = child_pid
        self.wall = self.cpu = 0.0

    def cpu_now(self) -> float:
        cpu = time.process_time()
        if self.child_pid is not None:  # utime and stime, fields 14 and 15 of /proc/PID/stat
            fields = Path(f"/proc/{self.child_pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return cpu

    def __enter__(self) -> "Stopwatch":
        self._cpu, self._wall = self.cpu_now(), time.perf_counter()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = self.cpu_now() - self._cpu


@contextmanager
def ftp_server(home: Path, mode: str) -> Iterator[tuple[dict[str, Any], int | None]]:
    """ The definition (host, port, user, password) of an FTP server serving `home`, and the id
    of its process (None: a thread of this one). """
    from zato_plugin_ftp.testing import FTPPeer
    if mode == "thread":
        with FTPPeer(home) as peer:
            yield peer.definition("My FTP Connection"), None
        return
    child = subprocess.Popen([sys.executable, "-c", FTP_CHILD, str(home)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"the FTP server process exited with {child.wait(5)} before giving its port")
        peer = FTPPeer(home)  # not started: only for the definition of the child's server
        peer.port = int(line)
        yield peer.definition("My FTP Connection"), child.pid
    finally:
        child.stdin.close()
        child.wait(10)


def put_files(home: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (home / name).write_bytes(data)


def check_moved(home: Path, standin: Any, directory: str, files: dict[str, bytes], side: str) -> None:
    """ Every file in `directory` of the stand-in, byte-identical, none left on the FTP server;
    then forgets them so that the next round starts empty. """
    left = sorted(path.name for path in home.iterdir())
    if left:
        raise RuntimeError(f"{side}: {len(left)} of {len(files)} files still on the FTP server: {left[:5]}")
    landed = {path: standin.files[path] for path in list(standin.files) if path.startswith(directory + "/")}
    expected = {f"{directory}/{name}" for name in files}
    if landed.keys() != expected:
        missing, unexpected = sorted(expected - landed.keys()), sorted(landed.keys() - expected)
        raise RuntimeError(f"{side}: {len(landed)} files in Dropbox's {directory}, not {len(files)}; missing: "
                           f"{missing[:5]}, unexpected: {unexpected[:5]}")
    for name, data in files.items():
        if landed[f"{directory}/{name}"] != data:
            raise RuntimeError(f"{side}: {directory}/{name} differs from what was put on the FTP server")
    for path in landed:
        del standin.files[path]


def make_files(count: int, size: int, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}-{index:04d}.bin": os.urandom(size) for index in range(count)}


# ################################################################################################


def raw_round(definition: dict[str, Any], client: Any, home: Path, standin: Any, files: dict[str, bytes],
              stopwatch: Stopwatch) -> Stopwatch:
    """ The plain script moving `files`: ftplib and the SDK, one thread. """
    from dropbox.files import WriteMode
    put_files(home, files)
    with stopwatch, ftplib.FTP() as ftp:
        ftp.connect(definition["host"], definition["port"], timeout=definition["timeout"])
        ftp.login(definition["user"], definition["password"])
        for name in ftp.nlst("/"):
            name = posixpath.basename(name)
            buffer = io.BytesIO()
            ftp.retrbinary(f"RETR /{name}", buffer.write, blocksize=FTP_BLOCK)
            client.files_upload(buffer.getvalue(), f"{RAW_DIR}/{name}", mode=WriteMode.overwrite)
            ftp.delete(f"/{name}")
    check_moved(home, standin, RAW_DIR, files, "raw")
    return stopwatch


async def platform_round(admin: Any, home: Path, standin: Any, files: dict[str, bytes],
                         stopwatch: Stopwatch) -> Stopwatch:
    """ One call of the article's FTP service moving `files`. """
    put_files(home, files)
    with stopwatch:
        reply = await admin.post(f"/zato/api/invoke/{SERVICE}", json={})
    if reply.status_code != 200:
        raise RuntimeError(f"platform: {SERVICE} answered {reply.status_code}: {reply.text[:500]}")
    check_moved(home, standin, PLATFORM_DIR, files, "platform")
    return stopwatch


async def configure(admin: Any, standin: Any, definition: dict[str, Any]) -> None:
    """ The article's two connections, through the admin API as in web-admin. """
    from zato_plugin_dropbox.testing import ACCESS_TOKEN
    definition = dict(definition)
    password = definition.pop("password")
    calls = [
        ("post", "/zato/api/objects/cloud_dropbox", {"name": "My Connection", "user_agent": "Zato-Bench/1.0",
                                                     "default_directory": PLATFORM_DIR,
                                                     "tls_ca_file": str(standin.ca_file)}, 201),
        ("put", "/zato/api/objects/cloud_dropbox/My%20Connection/secrets/oauth2_access_token",
         {"value": ACCESS_TOKEN}, 204),
        ("post", "/zato/api/objects/outgoing_ftp", definition, 201),
        ("put", "/zato/api/objects/outgoing_ftp/My%20FTP%20Connection/secrets/password", {"value": password}, 204),
    ]
    for method, path, body, status in calls:
        reply = await getattr(admin, method)(path, json=body)
        if reply.status_code != status:
            raise RuntimeError(f"{method.upper()} {path} answered {reply.status_code}: {reply.text[:500]}")


async def measure(args: argparse.Namespace, base: Path) -> dict[str, dict[str, list[Stopwatch]]]:

    import dropbox
    import httpx
    import trio

    from zato.testing import admin_auth, create_test_server_dir, run_server
    from zato_plugin_dropbox.connection import tls_session
    from zato_plugin_dropbox.testing import ACCESS_TOKEN, DropboxStandIn

    cases = {"small": (args.small_files, 1000), "large": (args.large_files, args.large_mb * MB)}
    files = {case: make_files(count, size, case) for case, (count, size) in cases.items()}
    quiet = {name: False for name in ("hot_deploy", "user_config", "pubsub", "rate_limit", "scheduler", "metrics")}
    server_dir = create_test_server_dir(base / "server", main={"graceful_timeout": 2, "max_body_size": 64 * MB},
                                        plugins={**quiet, "ftp": True, "dropbox": True})
    for example in ("dropbox_connector.py", "ftp_upload.py"):
        shutil.copy(EXAMPLES / example, server_dir / "pickup" / example)
    home = base / "ftp-home"
    home.mkdir()
    samples: dict[str, dict[str, list[Stopwatch]]] = {case: {"raw": [], "platform": []} for case in cases}
    with DropboxStandIn() as standin, standin.pointed_at(), ftp_server(home, args.ftp) as (definition, ftp_pid):
        # the SDK client as the plugin builds it: its own session trusting the stand-in's CA,
        # whatever REQUESTS_CA_BUNDLE says
        client = dropbox.Dropbox(oauth2_access_token=ACCESS_TOKEN, user_agent="Zato-Bench/1.0",
                                 session=tls_session({"tls_ca_file": str(standin.ca_file)}, "bench raw client"))
        async with run_server(server_dir) as server:
            async with httpx.AsyncClient(base_url=server.address, auth=admin_auth(), timeout=300,
                                         headers={"content-type": "application/json"}) as admin:
                await configure(admin, standin, definition)
                for case in cases:  # warm-up: one full round of each, not counted
                    await trio.to_thread.run_sync(raw_round, definition, client, home, standin, files[case],
                                                  Stopwatch(ftp_pid))
                    await platform_round(admin, home, standin, files[case], Stopwatch(ftp_pid))
                for round_no in range(args.rounds):
                    for case in cases:
                        samples[case]["raw"].append(await trio.to_thread.run_sync(
                            raw_round, definition, client, home, standin, files[case], Stopwatch(ftp_pid)))
                        samples[case]["platform"].append(await platform_round(admin, home, standin, files[case],
                                                                              Stopwatch(ftp_pid)))
                    print(f"round {round_no + 1}: " + ", ".join(
                        f"{case} raw {len(files[case]) / value['raw'][-1].wall:.1f} files/s, platform "
                        f"{len(files[case]) / value['platform'][-1].wall:.1f} files/s"
                        for case, value in samples.items()), flush=True)
        client.close()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small-files", type=int, default=500, help="1 kB files per round")
    parser.add_argument("--large-files", type=int, default=10, help="large files per round")
    parser.add_argument("--large-mb", type=int, default=10, help="size of each large file in MB")
    parser.add_argument("--ftp", choices=("process", "thread"), default="process",
                        help="pyftpdlib in a child process or in a thread of this process")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    import trio
    with tempfile.TemporaryDirectory(prefix="zato-bench-ftp-dropbox-") as tmp:
        samples = trio.run(measure, args, Path(tmp))
    sizes = {"small": (args.small_files, 1000), "large": (args.large_files, args.large_mb * MB)}
    labels = {"small": f"{args.small_files} x 1 kB", "large": f"{args.large_files} x {args.large_mb} MB"}
    print(f"\n{args.rounds} interleaved rounds, FTP server in a {args.ftp}, the Dropbox stand-in in this process")
    print(f"| {'case':<12} | {'raw files/s':>11} | {'raw MB/s':>8} | {'platform files/s':>16} | "
          f"{'platform MB/s':>13} | {'platform/raw':>12} | {'per round':<16} | {'CPU ms/file raw, platform':>25} |")
    print(f"|{'-' * 14}|{'-' * 13}|{'-' * 10}|{'-' * 18}|{'-' * 15}|{'-' * 14}|{'-' * 18}|{'-' * 27}|")
    results: dict[str, Any] = {}
    for case, (count, size) in sizes.items():
        wall = {side: [watch.wall for watch in samples[case][side]] for side in ("raw", "platform")}
        cpu = {side: [watch.cpu for watch in samples[case][side]] for side in ("raw", "platform")}
        raw, plat = (statistics.median(wall[side]) for side in ("raw", "platform"))
        raw_cpu, plat_cpu = (statistics.median(cpu[side]) * 1000 / count for side in ("raw", "platform"))
        per_round = [r / p for r, p in zip(wall["raw"], wall["platform"])]
        results[case] = {
            "files": count, "file_bytes": size, "wall_seconds": wall, "cpu_seconds": cpu,
            "raw": {"files_per_s": count / raw, "mb_per_s": count * size / raw / MB, "cpu_ms_per_file": raw_cpu},
            "platform": {"files_per_s": count / plat, "mb_per_s": count * size / plat / MB,
                         "cpu_ms_per_file": plat_cpu},
            "ratio": raw / plat, "per_round": per_round, "cpu_ratio": plat_cpu / raw_cpu}
        cpu_text = f"{raw_cpu:.2f}, {plat_cpu:.2f} ({plat_cpu / raw_cpu:.2f}x)"
        print(f"| {labels[case]:<12} | {count / raw:>11.1f} | {count * size / raw / MB:>8.2f} | "
              f"{count / plat:>16.1f} | {count * size / plat / MB:>13.2f} | {raw / plat:>11.2f}x | "
              f"{' '.join(f'{r:.2f}' for r in per_round):<16} | {cpu_text:>25} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "at": datetime.now(timezone.utc).isoformat(), "python": platform.python_version(), "cpus": os.cpu_count(),
        "rounds": args.rounds, "ftp": args.ftp, "cases": results,
    }, indent=2))
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
