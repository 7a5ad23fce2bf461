"""The heap trimmer gives freed memory inside the heap back to the system (glibc)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from syncmon.heap import HeapTrimmer, _malloc_trim

TRIM = _malloc_trim()
pytestmark = pytest.mark.skipif(TRIM is None, reason="no glibc malloc_trim here")


FRAGMENT = """
import ctypes, json
import psutil
from syncmon.heap import HeapTrimmer, _malloc_trim

def rss():
    return psutil.Process().memory_info().rss / 2**20

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
big, small, n = 64 * 1024, 64, 3000  # 64 KiB: below glibc's mmap threshold, on the heap
blocks = []
for _ in range(n):
    b = libc.malloc(big)
    ctypes.memset(b, 1, big)  # touched: resident
    blocks.append((b, libc.malloc(small)))  # a small block kept after each big one
filled = rss()
for b, _ in blocks:
    libc.free(b)  # holes between the kept small blocks
held = rss()
trimmer = HeapTrimmer(_malloc_trim(), interval_s=0.05)
trimmer.start()
trimmer.trimmed.wait(10)
after = rss()
trimmer.stop()
trimmer.join(5)
print(json.dumps(dict(filled=filled, held=held, after=after, trims=trimmer.trims,
                      released=trimmer.released, errors=trimmer.errors,
                      alive=trimmer.is_alive(), freed=n * big / 2**20)))
"""


def test_trimmer_returns_the_holes_a_fragmented_heap_keeps() -> None:
    # a fresh interpreter: in a process whose heap already has holes, the kept blocks would
    # fill those instead of sitting between the freed ones
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENT], capture_output=True, text=True, check=True, timeout=60
    )
    r = json.loads(out.stdout)
    assert r["trims"] >= 1 and r["errors"] == 0 and r["released"] >= 1
    assert not r["alive"]  # stop() ends it
    assert r["filled"] - r["held"] < 0.2 * r["freed"]  # free() alone gave (almost) nothing back
    assert r["held"] - r["after"] > 0.8 * r["freed"]  # the trim gave it back


def test_a_failing_trim_is_counted_and_stops_the_thread() -> None:
    def broken(_pad: int) -> int:
        raise OSError("boom")

    trimmer = HeapTrimmer(broken, interval_s=0.01)
    trimmer.start()
    trimmer.join(5)
    assert not trimmer.is_alive()
    assert trimmer.errors == 1 and trimmer.trims == 0


def test_one_trimmer_per_process() -> None:
    from syncmon.heap import start_heap_trimmer

    first = start_heap_trimmer()
    assert first is not None and first.is_alive() and first.daemon
    assert start_heap_trimmer() is first


THRESHOLDS = """
import ctypes, json
import psutil
from syncmon.heap import _malloc_trim, fit_to_frames, start_heap_trimmer

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
mib = 2**20

def rss():
    return psutil.Process().memory_info().rss / mib

def block(size):
    before = libc.mallinfo2().hblkhd
    b = libc.malloc(size)
    ctypes.memset(b, 1, size)  # touched: resident
    return b, (libc.mallinfo2().hblkhd - before) / mib

out = {}
b, out["mapped_before"] = block(8 * mib)  # glibc's default: a block this large is a mapping
libc.free(b)  # (which raises glibc's own threshold to 8 MiB)
out["fitted_outside"] = fit_to_frames(12 * mib)  # not syncmon's process (yet)
start_heap_trimmer()
out["fitted"] = fit_to_frames(12 * mib)
out["fitted_smaller"] = fit_to_frames(6 * mib)
out["fitted_absurd"] = fit_to_frames(16384 * 16384 * 3 // 2)  # glibc would map it anyway
b, out["mapped_frame"] = block(12 * mib)
libc.free(b)
out["kept_free"] = libc.mallinfo2().fordblks / mib  # free() kept it on the heap
b, out["mapped_larger"] = block(16 * mib)
libc.free(b)
held = rss()
_malloc_trim()(0)
out["given_back"] = held - rss()
print(json.dumps(out))
"""


def test_thresholds_fitted_to_frames_keep_them_on_the_heap_until_the_trim() -> None:
    # a fresh interpreter: the thresholds are the process's own
    out = subprocess.run(
        [sys.executable, "-c", THRESHOLDS], capture_output=True, text=True, check=True, timeout=60
    )
    r = json.loads(out.stdout)
    assert r["mapped_before"] >= 8
    # only in syncmon's own processes (the trimmer started), and only upwards
    assert not r["fitted_outside"] and r["fitted"] and not r["fitted_smaller"]
    assert not r["fitted_absurd"]  # a participant's absurd frame size fits nothing
    # a 12 MiB frame (glibc alone would map it: above its 8 MiB threshold then) from the heap,
    # kept there once freed (no faulting and zeroing for the next), given back by the trim;
    # a block larger than any frame still a mapping of its own, as glibc would have it
    assert r["mapped_frame"] == 0
    assert r["kept_free"] >= 12
    assert r["mapped_larger"] >= 16
    assert r["given_back"] >= 9, r
