"""Runs ``syncmon`` (its CLI, same arguments) with a thread that writes, every ``MEMLOG_S``
seconds, where the process's memory is to the JSON-lines file ``MEMLOG``: glibc malloc's own
accounting (``mallinfo2``: bytes in use, free inside its arenas, in mmapped blocks), CPython's
allocated block count, the number of live objects, threads, and the resident size of each kind
of mapping (``[heap]``, anonymous mappings by size, files) from ``/proc/self/smaps``.

RSS alone cannot tell a leak (bytes in use growing) from fragmentation (free bytes kept inside
the heap) or from native queues (other arenas); this tells them apart, and counts the live
per-avatar objects (a departed avatar's state held by a reference cycle showed there). Used by
``bench_soak.py --memlog``; Linux with glibc only.

    MEMLOG=/tmp/mem.jsonl python benchmarks/memlog.py watch --room r
    MEMLOG=/tmp/bare.jsonl python benchmarks/memlog.py benchmarks/bare_subscriber.py --room r
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo2() -> _MallInfo2:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()  # type: ignore[no-any-return]


def _mapping_kind(path: str, size: int) -> str:
    if path == "[anon]":
        # the SDK's native threads' malloc arenas are 64 MiB reservations; 1 MiB ones are
        # pymalloc's arenas
        if size >= 32 << 20:
            return "anon_arenas"
        return "anon_1MiB" if size == 1 << 20 else "anon_other"
    return path if path.startswith("[") else "files"


def smaps_rss_mib() -> dict[str, float]:
    """Resident MiB per kind of mapping."""
    kinds: dict[str, int] = {}
    kind = "?"
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if parts and not parts[0].endswith(":") and "-" in parts[0]:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                kind = _mapping_kind(parts[5] if len(parts) > 5 else "[anon]", hi - lo)
            elif parts and parts[0] == "Rss:":
                kinds[kind] = kinds.get(kind, 0) + int(parts[1])
    return {k: round(v / 1024, 1) for k, v in sorted(kinds.items())}


# per-avatar objects: more of them alive than avatars in the room (and those lingering) means
# something holds a departed avatar's state
WATCHED = ("AvatarState", "AvatarMonitor", "SyncAnalyzer", "VideoStream", "AudioStream")


def live_counts() -> dict[str, int]:
    counts = dict.fromkeys(WATCHED, 0)
    for o in gc.get_objects():
        for c in type(o).__mro__:
            if c.__name__ in counts:
                counts[c.__name__] += 1
                break
    return counts


def snapshot(t0: float) -> dict[str, Any]:
    m = _mallinfo2()
    mib = 2**20
    with open("/proc/self/statm") as f:
        rss_pages = int(f.read().split()[1])
    return {
        "t": round(time.monotonic() - t0, 1),
        "rss": round(rss_pages * os.sysconf("SC_PAGE_SIZE") / mib, 1),
        "malloc_used": round(m.uordblks / mib, 1),
        "malloc_free": round(m.fordblks / mib, 1),
        "malloc_mmapped": round(m.hblkhd / mib, 1),
        "py_blocks": sys.getallocatedblocks(),
        "objects": len(gc.get_objects()),
        "threads": threading.active_count(),
        "smaps": smaps_rss_mib(),
        "live": live_counts(),
    }


def _log(path: str, every: float) -> None:
    t0 = time.monotonic()
    while True:
        rec = snapshot(t0)
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        time.sleep(every)


def main() -> int:
    path = os.environ["MEMLOG"]
    every = float(os.environ.get("MEMLOG_S", "60"))
    threading.Thread(target=_log, args=(path, every), name="memlog", daemon=True).start()
    if sys.argv[1:2] and sys.argv[1].endswith(".py"):  # a script instead of the CLI
        import runpy

        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return 0
    from syncmon.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
