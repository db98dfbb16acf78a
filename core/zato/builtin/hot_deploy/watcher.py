""" `PickupWatcher`: the worker that watches the pickup directory (worker 1) polls it and deploys,
redeploys or undeploys each file once its change settled. """

from __future__ import annotations

import logging
from typing import Any

import trio

from zato.builtin.hot_deploy.deployer import PLUGIN, HotDeployer
from zato.builtin.hot_deploy.files import Signature, escaping_target, scan_pickup, settled_changes
from zato.server.deployment import DeploymentError

logger = logging.getLogger("zato.hot_deploy")

DEFAULT_POLL_INTERVAL = 0.2
MIN_POLL_INTERVAL = 0.02


class PickupWatcher:
    """ Watches the pickup directory for one `HotDeployer`, taking each change in a task of its own. """

    def __init__(self, deployer: HotDeployer, interval: float) -> None:
        self.deployer = deployer
        self.pickup_dir = deployer.pickup_dir
        self.interval = interval

    async def watch(self, current: dict[str, Signature]) -> None:
        """ Polls the pickup directory and acts on changes once they settle (`settled_changes`). """
        pending: dict[str, Signature | None] = {}
        failing = ""
        async with trio.open_nursery() as nursery:  # one task per change: a slow import holds up no other file
            while True:
                await trio.sleep(self.interval)
                try:
                    snapshot = await trio.to_thread.run_sync(scan_pickup, self.pickup_dir, self.deployer.suffixes)
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
                await self.deployer.undeploy(name, how="deleted from the pickup directory", remove_from_pickup=False)
            else:
                await self.deploy_from_pickup(name)
        except Exception:
            logger.exception("hot deployment of %s failed; the watcher goes on", self.deployer.shown(name))

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
            await self.deployer.deploy(name, source, how="from the pickup directory", save_to_pickup=False)
        except DeploymentError:
            pass  # logged with its file and line; the previous version keeps serving



def poll_interval_of(server: Any) -> float:
    interval = float(server.config.get(PLUGIN, {}).get("poll_interval", DEFAULT_POLL_INTERVAL))
    if interval < MIN_POLL_INTERVAL:
        logger.warning("[hot_deploy] poll_interval = %s is too short; using %s s", interval, MIN_POLL_INTERVAL)
        interval = MIN_POLL_INTERVAL
    return interval

