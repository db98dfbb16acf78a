""" The rotating server log counts what it writes instead of asking the file per record: the
files it rotates must still hold every line, each file under maxBytes, non-ASCII lines counted in
bytes, a file that existed before counted from its size, and lines relayed from workers counted
too. """

import logging

from zato.server.logs import LOG_FORMAT, RotatingLogFile, SafeFormatter, _Sharing


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test.log_files.{name}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    return logger


def _files(path) -> list:
    return sorted(path.parent.glob(path.name + "*"), key=lambda p: (len(p.name), p.name))


def test_every_line_is_kept_and_each_file_stays_under_max_bytes(tmp_path):
    path = tmp_path / "server.log"
    path.write_text("x" * 300 + "\n", "utf-8")  # there before: counted from its size
    handler = RotatingLogFile(path, maxBytes=1000, backupCount=50, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = _logger("sizes", handler)
    lines = [f"line {n} " + ("żółć " * (n % 7)) for n in range(200)]  # 2-byte characters in many
    for line in lines:
        logger.info(line)
    handler.close()
    files = _files(path)
    assert len(files) > 5
    for file in files:
        assert file.stat().st_size < 1000, (file, file.stat().st_size)
    written = []
    for file in reversed(files):  # server.log.N is the oldest
        written += file.read_text("utf-8").splitlines()
    assert written == ["x" * 300] + lines


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own_and_nothing_is_lost(tmp_path):
    path = tmp_path / "server.log"
    handler = RotatingLogFile(path, maxBytes=100, backupCount=5, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = _logger("long", handler)
    logger.info("short")
    logger.info("L" * 500)
    logger.info("after")
    handler.close()
    assert [f.read_text("utf-8") for f in _files(path)] == ["after\n", "L" * 500 + "\n", "short\n"]


def test_lines_relayed_from_workers_are_counted_with_the_rest(tmp_path):
    path = tmp_path / "server.log"
    handler = RotatingLogFile(path, maxBytes=400, backupCount=20, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    own = _logger("own", handler)
    relay = _Sharing(handler)
    relay.setFormatter(SafeFormatter(LOG_FORMAT))
    relayed = _logger("relayed", relay)
    for n in range(40):
        (own if n % 2 else relayed).info("message %d", n)
    handler.close()
    files = _files(path)
    assert len(files) > 3 and all(f.stat().st_size < 400 for f in files)
    text = "".join(f.read_text("utf-8") for f in reversed(files))
    assert all(f"message {n}" in text for n in range(40))
