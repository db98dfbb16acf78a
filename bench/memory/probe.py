""" What a process's memory holds, measured from inside it: used by bench/memory/run.py in both
servers it compares (the Zato worker, through a probe service, and the bare hypercorn app).

`heap_stats()` collects garbage first, so what it reports is what is still reachable: a leak is
memory that a collection cannot give back. It reports Python's view (allocated blocks, objects
the collector tracks, by type), pymalloc's arenas (from `sys._debugmallocstats`), glibc malloc's
view (`mallinfo2`: what lies outside pymalloc, and what malloc holds free) and the threads.
With tracemalloc running (`PYTHONTRACEMALLOC=N`), it can also dump a snapshot to a file.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import os
import re
import sys
import tempfile
import threading
import tracemalloc
from typing import Any

MB = 1024 * 1024


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def malloc_stats() -> dict[str, float] | None:
    """ glibc malloc, all arenas (MB): `in_use` by the program, `free` held by malloc but unused. """
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return {"heap_mb": round(info.arena / MB, 2), "mmapped_mb": round(info.hblkhd / MB, 2),
            "in_use_mb": round((info.uordblks + info.hblkhd) / MB, 2), "free_mb": round(info.fordblks / MB, 2)}


_PYMALLOC_KEYS = {
    "arenas": r"# arenas allocated current\s*=\s*([\d,]+)",
    "allocated_blocks_bytes": r"# bytes in allocated blocks\s*=\s*([\d,]+)",
    "available_blocks_bytes": r"# bytes in available blocks\s*=\s*([\d,]+)",
    "unused_pools_bytes": r"\d+ unused pools \* \d+ bytes\s*=\s*([\d,]+)",
    "arena_bytes": r"\d+ arenas \* \d+ bytes/arena\s*=\s*([\d,]+)",
}


def pymalloc_stats() -> dict[str, int] | None:
    """ pymalloc's own counts. CPython prints them only to the C-level stderr, so fd 2 is pointed
    at a temporary file for the call (a benchmark probe may do that; a server must not). """
    if not hasattr(sys, "_debugmallocstats"):
        return None
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as out:
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    found = {}
    for key, pattern in _PYMALLOC_KEYS.items():
        match = re.search(pattern, text)
        if match:
            found[key] = int(match.group(1).replace(",", ""))
    return found or None


def heap_stats(snapshot_path: str | None = None, top_types: int = 40) -> dict[str, Any]:
    """ Everything above, after a full collection; `snapshot_path`: also dump a tracemalloc
    snapshot there (if tracemalloc is tracing). """
    collected = gc.collect()
    by_type = collections.Counter(type(obj).__qualname__ for obj in gc.get_objects())
    stats: dict[str, Any] = {
        "pid": os.getpid(),
        "allocated_blocks": sys.getallocatedblocks(),
        "gc_objects": sum(by_type.values()),  # tracked objects outside gc.freeze()'s permanent generation
        "gc_frozen": gc.get_freeze_count(),
        "gc_collected_now": collected,
        "gc_garbage": len(gc.garbage),
        "types": dict(by_type.most_common(top_types)),
        "threads": threading.active_count(),
        "pymalloc": pymalloc_stats(),
        "malloc": malloc_stats(),
        "tracemalloc": None,
    }
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        stats["tracemalloc"] = {"current_mb": round(current / MB, 2), "peak_mb": round(peak / MB, 2),
                                "frames": tracemalloc.get_traceback_limit()}
        if snapshot_path:
            tracemalloc.take_snapshot().dump(snapshot_path)
            stats["snapshot"] = snapshot_path
    return stats
