""" The `hot_deploy` plugin: deploying user services while the server runs.

A `.py` file dropped into the pickup directory, replaced there or deleted from it is deployed,
redeployed or undeployed within a second, without a restart. `zato deploy DIR FILE` and the
admin API (`POST /zato/api/deploy/{file_name}` with the source as the body, `DELETE` to
undeploy) do the same. A file that does not import is rejected with its file and line, and the
version deployed before keeps serving. See docs/hot-deployment.md.

Where deployed code lives, so that it survives restarts:

* `pickup/` is what users deploy; the server deploys every `.py` file in it at start. Uploads
  through the API and the CLI are saved there too.
* `work/deployed/` keeps the last version of each pickup file that deployed. A pickup file that
  fails at start (edited while the server was down) is replaced by that version, so its
  services keep serving after a restart as well; other workers load new versions from it, so
  they only ever run code that deployed.

How a change reaches every worker: the worker that takes it (worker 1 watches the pickup
directory; any worker may get an API call) imports the new version aside, saves it in
`work/deployed/`, swaps it in and sends `hot_deploy.sync` naming the file. Each worker then
brings that file to what `work/deployed/` holds, so whatever the order notifications arrive
in, every worker ends with the last version saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import trio

from zato import hookimpl
from zato.common import SERVER_STARTUP
from zato.server.admin_auth import SOURCE_BODY, check_admin
from zato.server.http import HTTPError, HTTPRequest, HTTPResponse
from zato.server.plugin_state import PluginState
from zato.server.deployment import DeploymentError

logger = logging.getLogger("zato.hot_deploy")

PLUGIN = "hot_deploy"
DEPLOYER = PluginState["HotDeployer"](PLUGIN)
SYNC = "hot_deploy.sync"
DEPLOYED_DIR_NAME = "deployed"  # under work/
DEFAULT_POLL_INTERVAL = 0.2
MIN_POLL_INTERVAL = 0.02
MAX_NAME_BYTES = 255
DEFAULT_SLOW_IMPORT_WARNING = 5.0  # seconds
DEFAULT_IMPORT_TIMEOUT = 120.0  # seconds; 0: no limit

Signature = tuple[int, int, int, int, int, bool]  # what a scan sees of a file: a change changes it


# ################################################################################################
# File names and paths


class InvalidFileName(ValueError):
    """ A name that is not a plain `.py` file name directly in the pickup directory. """


def check_file_name(name: str) -> str:
    """ Returns `name` if it names a `.py` file directly in the pickup directory; otherwise
    raises `InvalidFileName` saying why. Nothing with a path in it gets through, so no name can
    reach outside the pickup directory. """
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
    elif not name.endswith(".py") or name == ".py":
        problem = "only .py files hold services"
    if problem:
        raise InvalidFileName(f"{name!r} cannot be deployed: {problem}; use a plain file name such as my_services.py")
    return name


def is_deployable_name(name: str) -> bool:
    try:
        check_file_name(name)
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


def scan_pickup(pickup_dir: Path) -> dict[str, Signature]:
    """ Every deployable regular file in the pickup directory, with what identifies its version
    on disk (inode, size, modification and change times). Blocking: run it in a thread. """
    found: dict[str, Signature] = {}
    try:
        with os.scandir(pickup_dir) as entries:
            for entry in entries:
                if not is_deployable_name(entry.name):
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


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ################################################################################################
# Deploying in one worker


@dataclass
class DeployResult:
    """ What a deployment did; the admin API answers with it. """
    file: str
    services: list[str]
    undeployed: list[str] = field(default_factory=list)
    digest: str = ""
    unchanged: bool = False
    took_ms: float = 0.0


class NotDeployed(LookupError):
    """ Undeploying a file that is neither in the pickup directory nor deployed. """


class HotDeployer:
    """ Hot deployment in one worker process: imports new versions aside, saves them, swaps
    them in and keeps the other workers in step. One deployment at a time per worker. """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.store = server.services
        self.pickup_dir: Path = server.paths.pickup_dir
        self.deployed_dir: Path = server.paths.work_dir / DEPLOYED_DIR_NAME
        self.is_watcher = server.options.worker_index == 0  # one worker watches the pickup directory
        self.lock = trio.Lock()  # held while services are swapped in, never while a module imports
        self.file_locks: dict[str, trio.Lock] = {}  # one deployment of a file at a time
        settings = server.config.get(PLUGIN, {})
        self.slow_import_warning = float(settings.get("slow_import_warning", DEFAULT_SLOW_IMPORT_WARNING))
        self.import_timeout = float(settings.get("import_timeout", DEFAULT_IMPORT_TIMEOUT))
        self.ready = trio.Event()  # set in AFTER_STARTED: from then on notifications reach other workers
        self.to_announce: list[str] = []  # files changed while this worker was down, to tell the others about

    def path_of(self, name: str) -> Path:
        return self.pickup_dir / check_file_name(name)

    def deployed(self, name: str) -> Any:
        """ The `DeployedFile` of a pickup file, or None. """
        return self.store.files.get(str(self.pickup_dir / name))

    def shown(self, name: str) -> str:
        return f"{self.pickup_dir.name}/{name}"

    # ############################################################################################
    # Changes this worker takes

    async def deploy(self, name: str, source: bytes, *, how: str, save_to_pickup: bool) -> DeployResult:
        """ Deploys a new version of a pickup file here, then in every worker. Raises
        `DeploymentError` (file, line) if it does not import; what was deployed stays.

        Only deployments of the same file wait for each other: a module that takes long to
        import holds up nothing else (it is imported outside the lock that swaps services in). """
        path = self.path_of(name)
        started = time.perf_counter()
        digest = sha256(source)
        async with self.file_lock(name):
            current = self.deployed(name)
            try:
                if current is not None and current.digest == digest:
                    if save_to_pickup:  # the same code again: make sure both saved copies hold it
                        await self._save(name, source, to_pickup=True)
                    return DeployResult(name, list(current.names), digest=digest, unchanged=True,
                                        took_ms=(time.perf_counter() - started) * 1000)
                loaded = await self.load(path, source)
                async with self.lock:
                    try:
                        self.store.check_file(loaded)
                        await self._save(name, source, to_pickup=save_to_pickup)
                    except DeploymentError:
                        self.store.discard(loaded)
                        raise
                    deployed, undeployed = self.store.commit_file(loaded)
            except DeploymentError as exc:
                keeps = "the previous version keeps serving" if current is not None else "nothing was deployed"
                message = f"{exc}; {keeps}"
                logger.error("hot deployment of %s (%s) rejected: %s", self.shown(name), how, message)
                raise DeploymentError(message, file=exc.file, line=exc.line) from None
        took = (time.perf_counter() - started) * 1000
        logger.info("hot-deployed %s (%s) in %.1f ms: services %s%s", self.shown(name), how, took,
                    ", ".join(deployed) or "(none)", f"; undeployed {', '.join(undeployed)}" if undeployed else "")
        await self.tell_others(name)
        return DeployResult(name, deployed, undeployed, digest, took_ms=took)

    def file_lock(self, name: str) -> trio.Lock:
        lock = self.file_locks.get(name)
        if lock is None:
            lock = self.file_locks[name] = trio.Lock()
        return lock

    async def load(self, path: Path, source: bytes) -> Any:
        """ Imports a version of a file aside (`ServiceStore.load_file`) in a worker thread. An
        import still running after `[hot_deploy] slow_import_warning` seconds is logged; one still
        running after `import_timeout` seconds is rejected (the thread cannot be stopped: it runs
        on, and what it imported is discarded). """
        async def warn_when_slow() -> None:
            await trio.sleep(self.slow_import_warning)
            logger.warning("%s is still importing after %g s (code run at import time: sleeps, network calls?); "
                           "other deployments go on meanwhile", path, self.slow_import_warning)

        loaded = error = None
        async with trio.open_nursery() as nursery:
            if self.slow_import_warning:
                nursery.start_soon(warn_when_slow)
            with trio.move_on_after(self.import_timeout or math.inf):
                try:
                    loaded = await trio.to_thread.run_sync(self.store.load_file, path, source, abandon_on_cancel=True)
                except Exception as exc:  # raised below, outside the nursery (else it would come in a group)
                    error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        if loaded is not None:
            return loaded
        raise DeploymentError(f"{path}: did not import within {self.import_timeout:g} s ([hot_deploy] import_timeout); "
                              f"the file was not deployed", file=str(path))

    async def undeploy(self, name: str, *, how: str, remove_from_pickup: bool) -> list[str]:
        """ Undeploys a pickup file's services here, then in every worker. """
        path = self.path_of(name)
        async with self.file_lock(name), self.lock:
            if remove_from_pickup:
                if self.deployed(name) is None and not os.path.lexists(path):
                    raise NotDeployed(f"{self.shown(name)} is not deployed and not in the pickup directory")
                await trio.to_thread.run_sync(_unlink, path)  # a symbolic link itself, not what it points to
            await trio.to_thread.run_sync(_unlink, self.deployed_dir / name)
            names = self.store.undeploy_file(path)
        logger.info("hot-undeployed %s (%s): services %s", self.shown(name), how, ", ".join(names) or "(none)")
        await self.tell_others(name)
        return names

    async def _save(self, name: str, source: bytes, *, to_pickup: bool) -> None:
        """ Saves a version that deployed: in work/deployed/, and in pickup/ for uploads. """
        targets = ([self.pickup_dir / name] if to_pickup else []) + [self.deployed_dir / name]
        for target in targets:
            try:
                await trio.to_thread.run_sync(write_atomically, target, source)
            except OSError as exc:
                raise DeploymentError(f"{self.pickup_dir / name}: cannot save the new version to {target} ({exc}); the "
                                      f"file was not deployed", file=str(self.pickup_dir / name)) from None

    async def tell_others(self, name: str) -> None:
        with trio.CancelScope(shield=True):  # a change made here must not stay here
            try:
                await self.server.notify(SYNC, {"name": name})
            except Exception:
                logger.exception("%s changed in this worker, but the other workers could not be told; they catch up "
                                 "when %s changes again or when they restart", self.shown(name), self.shown(name))

    # ############################################################################################
    # Changes other workers took

    async def sync(self, name: str) -> None:
        """ Brings a pickup file's services in this worker to what work/deployed/ holds. """
        try:
            path = self.path_of(name)
        except InvalidFileName as exc:
            logger.error("ignoring a %s notification: %s", SYNC, exc)
            return
        async with self.file_lock(name):
            source = await trio.to_thread.run_sync(_read_or_none, self.deployed_dir / name)
            current = self.deployed(name)
            if source is None:
                if current is not None:
                    async with self.lock:
                        names = self.store.undeploy_file(path)
                    logger.info("hot-undeployed %s (another worker did): services %s", self.shown(name),
                                ", ".join(names) or "(none)")
                return
            if current is not None and current.digest == sha256(source):
                return
            try:
                loaded = await self.load(path, source)
                async with self.lock:
                    deployed, undeployed = self.store.commit_file(loaded)
            except DeploymentError as exc:
                logger.error("%s deployed in another worker but not in this one: %s; this worker keeps the previous "
                             "version", self.shown(name), exc)
                return
        logger.info("hot-deployed %s (another worker did): services %s%s", self.shown(name),
                    ", ".join(deployed) or "(none)", f"; undeployed {', '.join(undeployed)}" if undeployed else "")

    # ############################################################################################
    # Start-up

    async def reconcile(self) -> dict[str, Signature]:
        """ Runs once at start, after the core deployed pickup/*.py: refuses links out of the
        pickup directory, serves the last good version of files that failed, and (in the
        watching worker) brings work/deployed/ in step with pickup/. Returns the state of the
        pickup directory the watcher starts from. """
        snapshot = await trio.to_thread.run_sync(scan_pickup, self.pickup_dir)
        failed = {name: error for name in snapshot
                  if (error := self.store.file_errors.get(str(self.pickup_dir / name))) is not None}
        for name in snapshot:
            target = escaping_target(self.pickup_dir, self.pickup_dir / name)
            if target is not None:
                names = self.store.undeploy_file(self.pickup_dir / name)
                failed[name] = DeploymentError(
                    f"{self.pickup_dir / name} is a symbolic link to {target}, outside the pickup directory: its "
                    f"services ({', '.join(names) or 'none'}) are not deployed; copy the file into {self.pickup_dir} "
                    f"instead")
                logger.error("%s", failed[name])

        restored: set[str] = set()
        for name, error in failed.items():
            if await self._restore_last_good(name, error):
                restored.add(name)
        if not self.is_watcher:
            return {}
        return await self._align_saved_copies(snapshot, restored)

    async def _restore_last_good(self, name: str, error: DeploymentError) -> bool:
        saved = self.deployed_dir / name
        source = await trio.to_thread.run_sync(_read_or_none, saved)
        if source is None:
            return False
        try:
            loaded = await trio.to_thread.run_sync(self.store.load_file, self.pickup_dir / name, source)
            deployed, _ = self.store.commit_file(loaded)
        except DeploymentError as exc:
            logger.error("the last version of %s that deployed (%s) does not deploy either: %s", self.shown(name),
                         saved, exc)
            return False
        logger.warning("%s; serving the last version that deployed instead (%s): services %s", error, saved,
                       ", ".join(deployed) or "(none)")
        return True

    async def _align_saved_copies(self, snapshot: dict[str, Signature], restored: set[str]) -> dict[str, Signature]:
        baseline: dict[str, Signature] = {}
        changed: list[str] = []
        for name, signature in snapshot.items():
            current = self.deployed(name)
            if current is None or name in restored:
                baseline[name] = signature  # failed at start: retried once it changes
                continue
            source = await trio.to_thread.run_sync(_read_or_none, self.pickup_dir / name)
            if source is None or sha256(source) != current.digest:
                continue  # changed since the start-up deployment: the watcher takes it on its first look
            baseline[name] = signature
            saved = await trio.to_thread.run_sync(_read_or_none, self.deployed_dir / name)
            if saved != source:
                await trio.to_thread.run_sync(write_atomically, self.deployed_dir / name, source)
                changed.append(name)
        saved_names = await trio.to_thread.run_sync(_saved_names, self.deployed_dir)
        for name in sorted(saved_names - snapshot.keys()):  # deleted from pickup/ while the server was down
            await trio.to_thread.run_sync(_unlink, self.deployed_dir / name)
            changed.append(name)
        if self.server.options.workers > 1:  # this worker may have been restarted alone: others missed these
            self.to_announce.extend(changed)
        return baseline

    # ############################################################################################
    # Watching the pickup directory

    async def watch(self, current: dict[str, Signature], interval: float) -> None:
        """ Polls the pickup directory and acts on changes once they settle (`settled_changes`). """
        pending: dict[str, Signature | None] = {}
        failing = ""
        async with trio.open_nursery() as nursery:  # one task per change: a slow import holds up no other file
            while True:
                await trio.sleep(interval)
                try:
                    snapshot = await trio.to_thread.run_sync(scan_pickup, self.pickup_dir)
                except OSError as exc:
                    if str(exc) != failing:
                        logger.error("cannot read the pickup directory %s: %s; retrying", self.pickup_dir, exc)
                        failing = str(exc)
                    continue
                failing = ""
                for name, signature in settled_changes(current, pending, snapshot):
                    nursery.start_soon(self._take_change, name, signature)

    async def _take_change(self, name: str, signature: Signature | None) -> None:
        """ Acts on one settled change of the pickup directory (changes of one file are taken in
        the order they were seen: `file_lock` is fair). """
        try:
            if signature is None:
                await self.undeploy(name, how="deleted from the pickup directory", remove_from_pickup=False)
            else:
                await self.deploy_from_pickup(name)
        except Exception:
            logger.exception("hot deployment of %s failed; the watcher goes on", self.shown(name))

    async def deploy_from_pickup(self, name: str) -> None:
        path = self.pickup_dir / name
        target = escaping_target(self.pickup_dir, path)
        if target is not None:
            logger.error("%s is a symbolic link to %s, outside the pickup directory: not deployed; copy the file into "
                         "%s instead", path, target, self.pickup_dir)
            return
        try:
            source = await trio.to_thread.run_sync(path.read_bytes)
        except FileNotFoundError:
            return  # deleted already: the next look sees it gone
        except OSError as exc:
            logger.error("cannot read %s: %s; not deployed", path, exc)
            return
        try:
            await self.deploy(name, source, how="from the pickup directory", save_to_pickup=False)
        except DeploymentError:
            pass  # logged with its file and line; the previous version keeps serving


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _saved_names(deployed_dir: Path) -> set[str]:
    try:
        return {entry.name for entry in os.scandir(deployed_dir) if is_deployable_name(entry.name)}
    except FileNotFoundError:
        return set()


def deployer_of(server: Any) -> HotDeployer:
    return DEPLOYER.get_or_create(server, lambda: HotDeployer(server))


def poll_interval_of(server: Any) -> float:
    interval = float(server.config.get(PLUGIN, {}).get("poll_interval", DEFAULT_POLL_INTERVAL))
    if interval < MIN_POLL_INTERVAL:
        logger.warning("[hot_deploy] poll_interval = %s is too short; using %s s", interval, MIN_POLL_INTERVAL)
        interval = MIN_POLL_INTERVAL
    return interval


# ################################################################################################
# The admin API


async def upload(request: HTTPRequest) -> HTTPResponse:
    """ `POST /zato/api/deploy/{file_name}`: the body is the module's source, sent as
    text/x-python or application/octet-stream (types a web page cannot send cross-site). """
    request.trace.channel = "admin.deploy"
    await check_admin(request, body_types=SOURCE_BODY)
    name = _file_name_of(request)
    if not request.body:
        raise HTTPError(400, f"Error 400 Bad Request: the body is empty; send the source of {name} as the body "
                             f"(curl --data-binary @{name})")
    deployer = deployer_of(request.server)
    try:
        result = await deployer.deploy(name, request.body, how=f"upload, cid {request.cid}", save_to_pickup=True)
    except DeploymentError as exc:
        raise HTTPError(400, f"Error 400 Bad Request: {exc}", extra={"file": name, "line": exc.line}) from None
    return HTTPResponse.json(asdict(result))


async def delete(request: HTTPRequest) -> HTTPResponse:
    """ `DELETE /zato/api/deploy/{file_name}`: undeploys the file's services and removes it. """
    request.trace.channel = "admin.deploy"
    await check_admin(request)
    name = _file_name_of(request)
    try:
        names = await deployer_of(request.server).undeploy(name, how=f"API, cid {request.cid}",
                                                           remove_from_pickup=True)
    except NotDeployed as exc:
        raise HTTPError(404, f"Error 404 Not Found: {exc}") from None
    return HTTPResponse.json({"file": name, "undeployed": names})


def _file_name_of(request: HTTPRequest) -> str:
    try:
        return check_file_name(request.path_params["file_name"])
    except InvalidFileName as exc:
        raise HTTPError(400, f"Error 400 Bad Request: {exc}") from None


# ################################################################################################
# The command line


@click.command("deploy")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def deploy_command(base_dir: str, file: str) -> None:
    """ Deploy FILE (a .py file of services) to the server running in BASE_DIR, without a restart.

    It is saved in the pickup directory under its own name. If it does not import, nothing
    changes, the error (file and line) is printed and the exit code is 1. """
    from zato.cli.admin_client import admin_request, describe_error, server_paths
    paths = server_paths(base_dir)
    name = os.path.basename(file)
    try:
        check_file_name(name)
    except InvalidFileName as exc:
        raise click.ClickException(str(exc)) from None
    source = Path(file).read_bytes()
    status, _, body = admin_request(paths, "POST", f"/zato/api/deploy/{quote(name)}", source,
                                    content_type="text/x-python")
    if status != 200:
        raise click.ClickException(describe_error(status, body))
    result = json.loads(body)
    services = ", ".join(result["services"]) or "no services"
    if result["unchanged"]:
        click.echo(f"{name} is already deployed with this content: {services}")
        return
    click.echo(f"deployed {name} in {result['took_ms']:.1f} ms: {services}")
    if result["undeployed"]:
        click.echo(f"undeployed (no longer in {name}): {', '.join(result['undeployed'])}")


@click.command("undeploy")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("file_name")
def undeploy_command(base_dir: str, file_name: str) -> None:
    """ Undeploy the services of FILE_NAME (e.g. my_services.py) and remove it from the pickup
    directory of the server running in BASE_DIR. """
    from zato.cli.admin_client import admin_request, describe_error, server_paths
    paths = server_paths(base_dir)
    try:
        check_file_name(file_name)
    except InvalidFileName as exc:
        raise click.ClickException(str(exc)) from None
    status, _, body = admin_request(paths, "DELETE", f"/zato/api/deploy/{quote(file_name)}")
    if status != 200:
        raise click.ClickException(describe_error(status, body))
    names = json.loads(body)["undeployed"]
    click.echo(f"undeployed {file_name}: {', '.join(names) or 'no services'}")


# ################################################################################################
# Hooks


@hookimpl
def register_server_config(register):
    from zato.registry import Setting
    register(PLUGIN, {"poll_interval": Setting(DEFAULT_POLL_INTERVAL, exclusive_minimum=0, maximum=3600,
                                               doc="Seconds between two looks at the pickup directory"),
                      "slow_import_warning": Setting(DEFAULT_SLOW_IMPORT_WARNING, minimum=0,
                                                     doc="Seconds after which a module still importing is logged"),
                      "import_timeout": Setting(DEFAULT_IMPORT_TIMEOUT, minimum=0,
                                                doc="Seconds after which a deployment still importing is rejected")},
             doc="Hot deployment: seconds between two looks at the pickup directory (by worker 1); seconds after "
                 "which a module still importing is logged, and after which its deployment is rejected (0: never).")


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_FILE_NAME = {
    "name": "file_name", "in": "path", "required": True,
    "description": f"a plain .py file name directly in the pickup directory (at most {MAX_NAME_BYTES} bytes in "
                   "UTF-8, no path separator, no '..', no control characters)",
    # what check_file_name accepts: no '/', '\\', '..' or control characters, and something before '.py'
    "schema": {"type": "string", "maxLength": MAX_NAME_BYTES,
               "pattern": r"^(?:[^./\\\x00-\x1f\x7f]|\.[^./\\\x00-\x1f\x7f])+\.py$"},
    "examples": {"module": {"value": "my_services.py"}}}
_DEPLOYED = {"description": "Deployed (or already deployed with this content: `unchanged`)", "content": {
    "application/json": {"schema": {"type": "object", "required": ["file", "services", "undeployed", "digest",
                                                                   "unchanged", "took_ms"], "properties": {
        "file": {"type": "string"}, "services": {"type": "array", "items": {"type": "string"},
                                                 "description": "the services the file holds now"},
        "undeployed": {"type": "array", "items": {"type": "string"},
                       "description": "services of the previous version that are gone"},
        "digest": {"type": "string", "description": "SHA-256 of the source"}, "unchanged": {"type": "boolean"},
        "took_ms": {"type": "number"}}}}}}


def _deploy_operation(method: str) -> dict[str, Any]:
    return {
        "operationId": f"deploy_{method}", "tags": ["deployment"], "parameters": [_FILE_NAME],
        "summary": "Deploy (or redeploy) a module of services, saved in the pickup directory; the body is its source",
        "requestBody": {"required": True, "content": {
            # the source as bytes: UTF-8 unless it declares another encoding (PEP 263)
            "text/x-python": {"schema": {"type": "string", "format": "binary", "minLength": 1}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}}}},
        "responses": {
            "200": _DEPLOYED,
            "400": {"description": "The file name is not a plain .py name, the body is empty, or the module does not "
                                   "import (`file` and `line` say where); what was deployed before keeps serving",
                    "content": {"application/json": {"schema": {"allOf": [{"$ref": "#/components/schemas/Error"}, {
                        "type": "object", "properties": {"file": {"type": "string"},
                                                         "line": {"type": ["integer", "null"]}}}]}}}}}}


DEPLOY_OPENAPI = {"post": _deploy_operation("post"), "put": _deploy_operation("put")}
UNDEPLOY_OPENAPI = {"delete": {
    "operationId": "undeploy", "tags": ["deployment"], "parameters": [_FILE_NAME],
    "summary": "Undeploy a module's services and remove it from the pickup directory",
    "responses": {
        "200": {"description": "Undeployed", "content": {"application/json": {"schema": {
            "type": "object", "required": ["file", "undeployed"], "properties": {
                "file": {"type": "string"}, "undeployed": {"type": "array", "items": {"type": "string"}}}}}}},
        "400": {"description": "The file name is not a plain .py name", "content": _ERROR},
        "404": {"description": "The file is neither deployed nor in the pickup directory", "content": _ERROR}}}}


@hookimpl
def register_http_routes(register):
    register("/zato/api/deploy/{file_name}", upload, methods=("POST", "PUT"), openapi=DEPLOY_OPENAPI)
    register("/zato/api/deploy/{file_name}", delete, methods=("DELETE",), openapi=UNDEPLOY_OPENAPI)


@hookimpl
def register_cli_commands(cli):
    cli.add_command(deploy_command)
    cli.add_command(undeploy_command)


@hookimpl
def register_notification_handlers(register):
    async def sync(server: Any, payload: dict[str, Any]) -> None:
        await deployer_of(server).sync(payload["name"])
    register(SYNC, sync)


@hookimpl
def register_tasks(register, server):
    deployer = deployer_of(server)
    interval = poll_interval_of(server)

    async def watch_pickup_dir(*, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        baseline = await deployer.reconcile()
        task_status.started()
        if not deployer.is_watcher:
            return
        await deployer.ready.wait()
        for name in deployer.to_announce:
            await deployer.tell_others(name)
        await deployer.watch(baseline, interval)

    register("pickup", watch_pickup_dir)


@hookimpl
def startup_phase(phase, ctx):
    if phase == SERVER_STARTUP.PHASE.AFTER_STARTED:
        deployer_of(ctx.kwargs["server"]).ready.set()
