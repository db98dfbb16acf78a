""" A worker process started by the supervisor (`zato.server.supervisor`); not run by hand. """

from __future__ import annotations

import argparse
import logging
import sys
from functools import partial

import trio

from zato.server.logs import setup_logging
from zato.server.main import START_FAILURE, explain_start_failure
from zato.server.server import ServerPaths, WorkerOptions, read_server_config, serve_worker
from zato.server.supervisor import set_parent_death_signal

logger = logging.getLogger("zato.server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zato.server.worker")
    parser.add_argument("base_dir")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--notify-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--sync-internal", action="store_true")
    parser.add_argument("--skip-broken-plugins", action="store_true")
    parser.add_argument("--console", action="store_true", help="log to stderr too (the supervisor shows it)")
    args = parser.parse_args(argv)

    set_parent_death_signal(args.parent_pid)
    # Workers append to the log file themselves (the supervisor alone rotates it; they reopen it
    # when it is rotated); stderr is a pipe to the supervisor for console output and crashes.
    paths = ServerPaths(args.base_dir)
    try:
        level = read_server_config(paths).get("logging", {}).get("level", "INFO")
    except Exception:
        level = "INFO"
    setup_logging(paths.log_file, console=args.console, level=level, watched=True)
    options = WorkerOptions(worker_index=args.index, workers=args.workers, listen_fd=args.listen_fd,
                            notify_fd=args.notify_fd, sync_internal=args.sync_internal,
                            skip_broken_plugins=args.skip_broken_plugins, write_runtime_file=False)
    try:
        trio.run(partial(serve_worker, args.base_dir, options))
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            return 0
        try:
            config = read_server_config(paths)
        except Exception:
            config = {}
        cause = explain_start_failure(exc, paths, config)
        if cause is None:
            logger.exception("worker %d stopped with an unexpected error", args.index + 1)
            cause = f"unexpected error: {type(exc).__name__}: {exc}; the traceback is in {paths.log_file}"
        else:
            logger.error("worker %d start-up failed: %s", args.index + 1, cause)
        # The supervisor reads this line from the pipe to say why a worker did not start (`START_FAILURE`)
        print(f"{START_FAILURE}{cause}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
