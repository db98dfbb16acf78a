""" Logging set-up: `logs/server.log` (rotated) and, with `--fg`, the console too. """

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path

from zato.common.files import LOG_DIR, LOG_FILE, make_dir, opener, tighten

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"

# C0 controls (line breaks, NUL, ESC...), DEL, C1 controls and the Unicode line/paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
CONTINUATION = "  "  # what every line of a traceback starts with


def _escape(match: re.Match) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def escape_control(text: str) -> str:
    """ `text` with every control character written as an escape (`\\n`, `\\x1b`, `\\u2028`). """
    return _CONTROL.sub(_escape, text) if _CONTROL.search(text) else text


def _indented(text: str) -> str:
    return "\n".join(CONTINUATION + escape_control(line) for line in text.rstrip("\n").split("\n"))


class SafeFormatter(logging.Formatter):
    """ The formatter of every handler the server sets up. A record is one line: control
    characters in it (from a path, a header, a user name, an object name...) are escaped, so
    no request can start a line of its own or put raw terminal escapes in the log. A traceback
    or stack follows on lines that each start with `CONTINUATION`, so a line that starts at
    column 0 is always the start of a record. """

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = escape_control(self.formatMessage(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + _indented(record.exc_text)
        if record.stack_info:
            text += "\n" + _indented(self.formatStack(record.stack_info))
        return text


def setup_logging(log_file: Path | None, *, console: bool, level: str = "INFO",
                  max_bytes: int = 20 * 1024 * 1024, backups: int = 5, watched: bool = False) -> None:
    """ Logs to `log_file` (rotated by this process; `watched`: appended to and reopened when
    another process rotates it) and, with `console`, to stderr. """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = SafeFormatter(LOG_FORMAT)
    if log_file is not None:
        make_dir(log_file.parent, LOG_DIR)
        if watched:
            file_handler: logging.Handler = WatchedLogFile(log_file, encoding="utf-8")
        else:
            file_handler = RotatingLogFile(log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        root.addHandler(stream)
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    logging.getLogger("zato.hypercorn").setLevel(logging.WARNING)
    _hold_enclog()


# ################################################################################################
# getLogger('enclog'): records meant to be encrypted (zato-plugin-enclog) never go anywhere in clear

ENCLOG_LOGGER = "enclog"


class DroppedEnclog(logging.Handler):
    """ The `enclog` logger's only handler until zato-plugin-enclog, switched on, replaces it with its
    encrypting one: records are dropped, and the first one dropped logs one warning (never its text)
    saying how to switch the plugin on. """

    def __init__(self) -> None:
        super().__init__()
        self.warned = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.warned:  # called with this handler's lock held
            return
        self.warned = True
        logging.getLogger("zato.server.logs").warning(
            "records of logger 'enclog' are dropped, not written in clear: the enclog plugin is not switched "
            "on; to write them encrypted to logs/enclog.log, install zato-plugin-enclog and set, in server.conf, "
            "[deploy_internal] zato_plugin_enclog = True and an [enclog] section with key = $NAME (an environment "
            "variable holding a key that `zato enclog genkey` prints)")


def _hold_enclog() -> None:
    """ `enclog` does not propagate, and has `DroppedEnclog` alone (never no handler at all: Python
    would then print WARNING and above to stderr in clear) until the plugin's start-up, which comes
    after this in every process (workers too), removes it and attaches its own. """
    enclog = logging.getLogger(ENCLOG_LOGGER)
    enclog.propagate = False
    for handler in list(enclog.handlers):
        enclog.removeHandler(handler)
        handler.close()
    enclog.addHandler(DroppedEnclog())


def feature_log_file(logger_name: str, path: Path) -> logging.Logger:
    """ A logger whose records go to `path` alone, not to server.log: a feature's low-level
    details (the IBM MQ plugin's logs/ibm-mq.log, as in Zato). Appended to, reopened when
    something rotates it, 0640 at most, in the server's one-line format; calling it again for the
    same path changes nothing, and for another path (a second server in one process, as in tests)
    moves the logger there, closing the file it wrote before. """
    feature = logging.getLogger(logger_name)
    feature.propagate = False
    if feature.level == logging.NOTSET:
        feature.setLevel(logging.INFO)
    target = str(Path(path).resolve())
    for handler in list(feature.handlers):
        if isinstance(handler, WatchedLogFile) and handler.baseFilename != target:
            feature.removeHandler(handler)
            handler.close()
    if not any(isinstance(h, WatchedLogFile) for h in feature.handlers):
        make_dir(Path(path).parent, LOG_DIR)
        handler = WatchedLogFile(path, encoding="utf-8")
        handler.setFormatter(SafeFormatter(LOG_FORMAT))
        feature.addHandler(handler)
    return feature


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
        # on the console, the workers' own lines (formatted already); in the file, unexpected
        # output, each line a record of its own so that none of it can pass for a worker's record
        clone.setFormatter(SafeFormatter("%(message)s" if console_only else LOG_FORMAT))
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
                if isinstance(self.target, RotatingLogFile):
                    self.target.write_counted(message + "\n")
                    return
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


# ################################################################################################
# Log files 0640 at most, whatever the umask: a log can name users, paths and payloads


class _LogFileMode:
    """ Opens the log file (and every file that rotation starts) with `LOG_FILE`'s mode at most;
    files an older version left more open, rotated ones included, are tightened. """

    def _open(self):  # type: ignore[no-untyped-def]
        backups = getattr(self, "backupCount", 0)
        for path in [self.baseFilename, *(f"{self.baseFilename}.{n}" for n in range(1, backups + 1))]:
            tighten(path, LOG_FILE, quiet=True)
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors, opener=opener(LOG_FILE))


class RotatingLogFile(_LogFileMode, logging.handlers.RotatingFileHandler):
    """ logs/server.log, rotated by this process. The file's size is counted as lines are
    written (the stdlib's handler formats each record twice and asks the file for its size with
    two stat calls, a seek and a tell per record: a third of the cost of a request's log line). """
    _written: int | None = None  # bytes in the current file; None: ask the file once

    def _open(self):  # type: ignore[no-untyped-def]
        self._written = None
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_counted(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_counted(self, message: str) -> None:
        """ Writes a formatted line, rotating first if it would take the file to maxBytes (a
        line longer than maxBytes alone goes into a file of its own). Called with the lock held. """
        if self.stream is None:
            self.stream = self._open()
        size = self._written
        if size is None:
            self.stream.seek(0, 2)
            size = self.stream.tell()
        length = len(message) if message.isascii() else len(message.encode(self.encoding or "utf-8", "replace"))
        if self.maxBytes > 0 and size > 0 and size + length >= self.maxBytes:
            self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            size = 0
        self.stream.write(message)
        self.stream.flush()
        self._written = size + length


class WatchedLogFile(_LogFileMode, logging.handlers.WatchedFileHandler):
    """ logs/server.log, reopened when another process rotates it. """
