""" The `hot_deploy` plugin: deploying user services while the server runs.

A `.py` file dropped into the pickup directory, replaced there or deleted from it is deployed,
redeployed or undeployed within a second, without a restart. So are files of the suffixes
plugins register (`register_deployable_files`, e.g. `.bst` definitions): the plugin deploys
each (`DeployableFile.deploy`, in the worker taking the change; at start in the watching
worker once the server has started) and shares what it deployed itself. `zato deploy DIR FILE` and the
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

The plugin's parts:

* `files` - file names (`check_file_name`), scanning the pickup directory (`settled_changes`),
  writing atomically (pure functions; the blocking ones run in worker threads);
* `deployer` - `HotDeployer`, deployment in one worker: imports, locks, timeouts, saving,
  telling the other workers, start-up reconciliation; its per-server slot `DEPLOYER`;
* `watcher` - `PickupWatcher`, the pickup directory's watcher (worker 1);
* `api` - the admin API routes and their OpenAPI descriptions;
* `cli` - `zato deploy` and `zato undeploy`;
* this module - the hook implementations, and every public name re-exported.
"""

from __future__ import annotations

from typing import Any

import trio

from zato import hookimpl
from zato.builtin.hot_deploy.api import DEPLOY_OPENAPI, UNDEPLOY_OPENAPI, delete, upload
from zato.builtin.hot_deploy.cli import deploy_command, undeploy_command
from zato.builtin.hot_deploy.deployer import (
    DEFAULT_IMPORT_TIMEOUT, DEFAULT_SLOW_IMPORT_WARNING, DEPLOYED_DIR_NAME, DEPLOYER, PLUGIN, SYNC, DeployResult,
    HotDeployer, NotDeployed, deployer_of,
)
from zato.builtin.hot_deploy.files import (
    MAX_NAME_BYTES, InvalidFileName, Signature, check_file_name, escaping_target, is_deployable_name, scan_pickup,
    settled_changes, sha256, write_atomically,
)
from zato.builtin.hot_deploy.watcher import (
    DEFAULT_POLL_INTERVAL, MIN_POLL_INTERVAL, PickupWatcher, poll_interval_of,
)
from zato.common import SERVER_STARTUP

__all__ = [
    "DEFAULT_IMPORT_TIMEOUT", "DEFAULT_POLL_INTERVAL", "DEFAULT_SLOW_IMPORT_WARNING", "DEPLOYED_DIR_NAME", "DEPLOYER",
    "DEPLOY_OPENAPI", "MAX_NAME_BYTES", "MIN_POLL_INTERVAL", "PLUGIN", "SYNC", "UNDEPLOY_OPENAPI", "DeployResult",
    "HotDeployer", "InvalidFileName", "NotDeployed", "PickupWatcher", "Signature", "check_file_name", "delete",
    "deploy_command", "deployer_of", "escaping_target", "is_deployable_name", "poll_interval_of", "scan_pickup",
    "settled_changes", "sha256", "undeploy_command", "upload", "write_atomically",
]


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
        await deployer.deploy_other_files_at_start(baseline)
        await PickupWatcher(deployer, interval).watch(baseline)

    register("pickup", watch_pickup_dir)


@hookimpl
def startup_phase(phase, ctx):
    if phase == SERVER_STARTUP.PHASE.AFTER_STARTED:
        deployer_of(ctx.kwargs["server"]).ready.set()
