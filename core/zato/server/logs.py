""" Logging set-up: `logs/server.log` (rotated) and, with `--fg`, the console too. """

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def setup_logging(log_file: Path | None, *, console: bool, level: str = "INFO",
                  max_bytes: int = 20 * 1024 * 1024, backups: int = 5, watched: bool = False) -> None:
    """ Logs to `log_file` (rotated by this process; `watched`: appended to and reopened when
    another process rotates it) and, with `console`, to stderr. """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(LOG_FORMAT)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        if watched:
            file_handler: logging.Handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        else:
            file_handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups,
                                                                encoding="utf-8")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    logging.getLogger("zato.hypercorn").setLevel(logging.WARNING)


def relay_logger(*, console_only: bool = False) -> logging.Logger:
    """ Writes lines that are already formatted: what worker processes print to stderr, relayed by
    the supervisor. `console_only`: the workers log to the file themselves and print their log
    lines for the console, so relayed lines go to the console alone (else they would be in the
    file twice); otherwise what a worker prints is unexpected output (a crash) and goes to the
    file too. """
    relay = logging.getLogger("zato.relay")
    relay.propagate = False
    for handler in list(relay.handlers):
        relay.removeHandler(handler)
    for handler in logging.getLogger().handlers:
        if console_only and isinstance(handler, logging.FileHandler):
            continue
        clone = _Sharing(handler)
        clone.setFormatter(logging.Formatter("%(message)s"))
        relay.addHandler(clone)
    relay.setLevel(logging.DEBUG)
    return relay


class _Sharing(logging.Handler):
    """ Emits through another handler's stream with its own formatter. """

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            self.target.acquire()
            try:
                if isinstance(self.target, logging.handlers.RotatingFileHandler):
                    if self.target.shouldRollover(record):
                        self.target.doRollover()
                    if self.target.stream is None:
                        self.target.stream = self.target._open()
                stream = self.target.stream
                stream.write(message + "\n")
                stream.flush()
            finally:
                self.target.release()
        except Exception:
            self.handleError(record)
