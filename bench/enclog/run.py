""" µs per log line: EncryptedLogFormatter vs a plain logging.Formatter, each to its own file,
same run, interleaved rounds. JSON to bench/results/enclog.json.

    .venv/bin/python bench/enclog/run.py [--lines 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from zato.enclog import EncryptedLogFormatter, genkey

FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def logger_for(name: str, path: Path, formatter: logging.Formatter) -> tuple[logging.Logger, logging.Handler]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(formatter)
    log = logging.getLogger(name)
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    return log, handler


def one_round(log: logging.Logger, lines: int) -> float:
    started = time.perf_counter()
    for n in range(lines):
        log.info("user %s paid %d EUR for order %s", "Jane Xi", n, "ORD-12345")
    return (time.perf_counter() - started) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain, plain_handler = logger_for("bench.plain", Path(tmp) / "plain.log", logging.Formatter(FORMAT))
        enc, enc_handler = logger_for("bench.enclog", Path(tmp) / "enclog.log", EncryptedLogFormatter(genkey(), FORMAT))
        one_round(plain, 1000), one_round(enc, 1000)  # warm-up
        results: dict[str, list[float]] = {"plain": [], "enclog": []}
        for _ in range(args.rounds):
            results["plain"].append(one_round(plain, args.lines))
            results["enclog"].append(one_round(enc, args.lines))
        plain_handler.close(), enc_handler.close()
    median = {name: statistics.median(values) for name, values in results.items()}
    report = {"lines_per_round": args.lines, "rounds": args.rounds, "us_per_line_median": median,
              "us_per_line_rounds": results, "ratio_enclog_to_plain": median["enclog"] / median["plain"]}
    out = Path(__file__).resolve().parents[1] / "results" / "enclog.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"plain {median['plain']:.2f} µs/line, enclog {median['enclog']:.2f} µs/line, "
          f"ratio {report['ratio_enclog_to_plain']:.2f} -> {out}")


if __name__ == "__main__":
    main()
