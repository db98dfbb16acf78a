""" `HotDeployer`: hot deployment in one worker process - importing a new version aside (with its
slow-import warning and import timeout), saving it, swapping it in under the locks, and keeping
the other workers in step (`hot_deploy.sync`); at start, `reconcile`. """

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from zato.builtin.hot_deploy.files import (
    InvalidFileName, Signature, check_file_name, escaping_target, read_or_none, saved_names, scan_pickup, sha256,
    unlink, write_atomically,
)
from zato.registry import Kind
from zato.server.deployment import DeploymentError
from zato.server.plugin_state import PluginState

logger = logging.getLogger("zato.hot_deploy")

PLUGIN = "hot_deploy"
DEPLOYER = PluginState["HotDeployer"](PLUGIN)
SYNC = "hot_deploy.sync"
DEPLOYED_DIR_NAME = "deployed"  # under work/
DEFAULT_SLOW_IMPORT_WARNING = 5.0  # seconds
DEFAULT_IMPORT_TIMEOUT = 120.0  # seconds; 0: no limit


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
        # Files other than .py that plugins deploy (zato.registry.DeployableFile), by suffix
        self.other_files: dict[str, Any] = dict(server.registry.items(Kind.DEPLOYABLE_FILES))
        self.suffixes = tuple(self.other_files)

    def path_of(self, name: str) -> Path:
        return self.pickup_dir / check_file_name(name, self.suffixes)

    def handler_of(self, name: str) -> Any:
        """ The `DeployableFile` a plugin registered for this file's suffix, or None for .py. """
        return self.other_files.get(os.path.splitext(name)[1])

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
        handler = self.handler_of(name)
        if handler is not None:
            return await self._deploy_other(handler, name, source, how=how, save_to_pickup=save_to_pickup)
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

    async def _deploy_other(self, handler: Any, name: str, source: bytes, *, how: str,
                            save_to_pickup: bool) -> DeployResult:
        """ A file of a plugin's suffix: the plugin deploys it (here only: it makes what it deployed
        reach the other workers itself), and an upload is saved in the pickup directory. """
        path = self.pickup_dir / name
        started = time.perf_counter()
        async with self.file_lock(name):
            try:
                names = list(await handler.deploy(self.server, name, source) or ())
            except DeploymentError as exc:
                message = f"{exc}; what was deployed from it before stays"
                logger.error("hot deployment of %s (%s) rejected: %s", self.shown(name), how, message)
                raise DeploymentError(message, file=exc.file or str(path), line=exc.line) from None
            except Exception as exc:
                logger.exception("hot deployment of %s (%s): the plugin deploying %s files failed", self.shown(name),
                                 how, handler.suffix)
                raise DeploymentError(f"{self.shown(name)}: the plugin deploying {handler.suffix} files failed "
                                      f"({type(exc).__name__}: {exc}); see the server log", file=str(path)) from None
            if save_to_pickup:
                await trio.to_thread.run_sync(write_atomically, path, source)
        took = (time.perf_counter() - started) * 1000
        logger.info("hot-deployed %s (%s) in %.1f ms: %s %s", self.shown(name), how, took, handler.description,
                    ", ".join(names) or "(none)")
        return DeployResult(name, names, digest=sha256(source), took_ms=took)

    async def _undeploy_other(self, handler: Any, name: str, *, how: str, remove_from_pickup: bool) -> list[str]:
        path = self.pickup_dir / name
        async with self.file_lock(name):
            if remove_from_pickup:
                if not os.path.lexists(path):
                    raise NotDeployed(f"{self.shown(name)} is not in the pickup directory")
                await trio.to_thread.run_sync(unlink, path)
            names = list(await handler.undeploy(self.server, name) or ())
        logger.info("hot-undeployed %s (%s): %s %s", self.shown(name), how, handler.description,
                    ", ".join(names) or "(none)")
        return names

    async def deploy_other_files_at_start(self, snapshot: dict[str, Signature]) -> None:
        """ The watching worker deploys the pickup directory's files of plugins' suffixes once the
        server has started (what they deploy is shared: configuration objects, for instance). """
        for name in sorted(snapshot):
            if self.handler_of(name) is None or escaping_target(self.pickup_dir, self.pickup_dir / name) is not None:
                continue  # a link out of the pickup directory is refused (reconcile logged it)
            source = await trio.to_thread.run_sync(read_or_none, self.pickup_dir / name)
            if source is None:
                continue
            try:
                await self.deploy(name, source, how="at start", save_to_pickup=False)
            except DeploymentError:
                pass  # logged with its file and line

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
        handler = self.handler_of(name)
        if handler is not None:
            return await self._undeploy_other(handler, name, how=how, remove_from_pickup=remove_from_pickup)
        async with self.file_lock(name), self.lock:
            if remove_from_pickup:
                if self.deployed(name) is None and not os.path.lexists(path):
                    raise NotDeployed(f"{self.shown(name)} is not deployed and not in the pickup directory")
                await trio.to_thread.run_sync(unlink, path)  # a symbolic link itself, not what it points to
            await trio.to_thread.run_sync(unlink, self.deployed_dir / name)
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
        if self.handler_of(name) is not None:
            return  # the plugin deploying it reaches the other workers itself
        async with self.file_lock(name):
            source = await trio.to_thread.run_sync(read_or_none, self.deployed_dir / name)
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
        snapshot = await trio.to_thread.run_sync(scan_pickup, self.pickup_dir, self.suffixes)
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
        source = await trio.to_thread.run_sync(read_or_none, saved)
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
            source = await trio.to_thread.run_sync(read_or_none, self.pickup_dir / name)
            if source is None or sha256(source) != current.digest:
                continue  # changed since the start-up deployment: the watcher takes it on its first look
            baseline[name] = signature
            saved = await trio.to_thread.run_sync(read_or_none, self.deployed_dir / name)
            if saved != source:
                await trio.to_thread.run_sync(write_atomically, self.deployed_dir / name, source)
                changed.append(name)
        kept = await trio.to_thread.run_sync(saved_names, self.deployed_dir)
        for name in sorted(kept - snapshot.keys()):  # deleted from pickup/ while the server was down
            await trio.to_thread.run_sync(unlink, self.deployed_dir / name)
            changed.append(name)
        if self.server.options.workers > 1:  # this worker may have been restarted alone: others missed these
            self.to_announce.extend(changed)
        return baseline


def deployer_of(server: Any) -> HotDeployer:
    return DEPLOYER.get_or_create(server, lambda: HotDeployer(server))

