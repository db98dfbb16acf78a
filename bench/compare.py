""" Before and after: one benchmark run against an earlier commit and against the working tree,
in interleaved rounds in the same session, with the per-round ratios.

    .venv/bin/python bench/compare.py REV [--rounds N] [--keys REGEX] [--script each|current] -- NAME [ARGS...]

`REV` is checked out into a temporary git worktree; its `core/` and every `plugins/*/src` go
first on PYTHONPATH for its runs, so the same interpreter and installed dependencies run both
trees (plugins installed since `REV`, which need a newer core, are hidden from its runs). `NAME` is a directory of bench/ (`rest`, `pubsub`, `scheduler`...) and `ARGS` are passed
to its `run.py` unchanged, with `--output` added. Rounds alternate which tree goes first
(before/after, then after/before...), so a drift of the machine during the session falls on
both sides.

`--script each` (the default) runs each tree's own `run.py`; `--script current` runs the working
tree's script against both trees (for a benchmark whose script was fixed since `REV`, when the
services it deploys run unchanged on both).

Every number in the benchmarks' JSON results whose path matches `--keys` is reported: the
median of the rounds before and after, after/before, and the ratio of each round. A ratio is
only worth reading beside its spread across rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
DEFAULT_KEYS = r"^(median|summary|reports|ratio|idle)"


def numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """ Every number in a JSON document, by its path (`summary[0].rps`); lists of numbers and
    booleans are left out. """
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        if not all(isinstance(item, (int, float)) for item in value):
            for index, item in enumerate(value):
                yield from numbers(item, f"{path}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def checkout(rev: str, into: Path) -> Path:
    tree = into / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
    return tree


# Imported first by every Python process of an earlier tree's runs (`sitecustomize`): hides the
# entry points of plugins that tree does not have, which the shared virtual environment has
# installed since (their code needs a newer core).
_HIDE_NEWER_PLUGINS = '''
import importlib.metadata as _metadata

_KNOWN = {known!r}
_entry_points = _metadata.entry_points


def _only_known(*args, **kwargs):
    found = _entry_points(*args, **kwargs)
    if kwargs.get("group", "").startswith("zato.plugins"):
        return _metadata.EntryPoints(ep for ep in found if ep.dist is None or ep.dist.name in _KNOWN)
    return found


_metadata.entry_points = _only_known
'''


def python_path(tree: Path) -> str:
    paths = [tree / "core", *sorted(tree.glob("plugins/*/src"))]
    return os.pathsep.join(str(path) for path in paths)


def hide_newer_plugins(tree: Path, into: Path) -> Path:
    """ A directory holding the `sitecustomize` that hides plugins `tree` does not have. """
    import tomllib
    known = {"zato-core"} | {tomllib.loads(path.read_text("utf-8"))["project"]["name"]
                             for path in tree.glob("plugins/*/pyproject.toml")}
    directory = into / "site"
    directory.mkdir(exist_ok=True)
    (directory / "sitecustomize.py").write_text(_HIDE_NEWER_PLUGINS.format(known=sorted(known)))
    return directory


def run_once(label: str, tree: Path, script_tree: Path, name: str, args: list[str], output: Path) -> dict[str, float]:
    env = dict(os.environ)
    if tree != REPO:
        site = hide_newer_plugins(tree, output.parent)
        env["PYTHONPATH"] = os.pathsep.join([str(site), python_path(tree)] + (
            [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    command = [sys.executable, str(script_tree / "bench" / name / "run.py"), *args, "--output", str(output)]
    print(f"--- {label}: {' '.join(command[1:])}", flush=True)
    completed = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.stdout.write(completed.stdout[-4000:] + completed.stderr[-4000:])
        raise SystemExit(f"the {label} run of bench/{name} failed with exit code {completed.returncode}")
    return dict(numbers(json.loads(output.read_text())))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: bench/compare.py REV [options] -- NAME [ARGS...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the commit to compare the working tree against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", default=DEFAULT_KEYS, help=f"a regex of the result paths to report ({DEFAULT_KEYS})")
    parser.add_argument("--script", choices=("each", "current"), default="each")
    parser.add_argument("--output", type=Path, help="write the comparison as JSON here")
    options = parser.parse_args(argv[:split])
    name, *args = argv[split + 1:]
    if not (REPO / "bench" / name / "run.py").exists():
        raise SystemExit(f"no benchmark bench/{name}/run.py")
    keys = re.compile(options.keys)
    temp = Path(tempfile.mkdtemp(prefix="zato-bench-compare-"))
    tree = checkout(options.rev, temp)
    results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    try:
        for round_no in range(options.rounds):
            order = ("before", "after") if round_no % 2 == 0 else ("after", "before")
            for side in order:
                side_tree = tree if side == "before" else REPO
                script_tree = REPO if options.script == "current" else side_tree
                label = f"round {round_no + 1}, {side} ({options.rev if side == 'before' else 'working tree'})"
                results[side].append(run_once(label, side_tree, script_tree, name, args,
                                              temp / f"{side}-{round_no}.json"))
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(temp, ignore_errors=True)
    report = compare(results, keys)
    print(f"\nbench/{name} {' '.join(args)}: {options.rev} (before) vs the working tree (after), "
          f"{options.rounds} interleaved rounds")
    width = max((len(row["key"]) for row in report), default=10)
    print(f"{'result':<{width}} | {'before':>12} | {'after':>12} | after/before | per round")
    for row in report:
        rounds = " ".join(f"{ratio:.2f}" for ratio in row["round_ratios"])
        print(f"{row['key']:<{width}} | {row['before']:>12.4g} | {row['after']:>12.4g} | {row['ratio']:>11.2f}x | {rounds}")
    if options.output:
        options.output.write_text(json.dumps({"rev": options.rev, "bench": name, "args": args,
                                              "rounds": options.rounds, "rows": report}, indent=2))
    return 0


def compare(results: dict[str, list[dict[str, float]]], keys: re.Pattern[str]) -> list[dict[str, Any]]:
    """ A row per result path found in every round of both sides. """
    common = set.intersection(*(set(run) for side in results.values() for run in side))
    rows = []
    for key in sorted(common, key=lambda key: list(results["after"][0]).index(key)):
        if not keys.search(key):
            continue
        before = [run[key] for run in results["before"]]
        after = [run[key] for run in results["after"]]
        median_before, median_after = statistics.median(before), statistics.median(after)
        rows.append({"key": key, "before": median_before, "after": median_after,
                     "ratio": median_after / median_before if median_before else float("nan"),
                     "round_ratios": [a / b if b else float("nan") for a, b in zip(after, before)]})
    return rows


if __name__ == "__main__":
    sys.exit(main())
