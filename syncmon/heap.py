"""Giving the heap's free memory back to the system, once a minute.

The monitor's analysis allocates and frees a few MB for every estimate (window matrices, the
stacked grids) between the small arrays it keeps for seconds (each frame's grids, the audio's
envelope). glibc's allocator serves large blocks from the heap once the first of them was freed
(its mmap threshold rises to their size), and the kept arrays land in the holes they leave: the
heap's free space grows while what is in use stays flat. Measured on a steady two-avatar
monitor over 13 minutes: in use 50.6 -> 51.1 MiB, free inside the heap 7.0 -> 11.8 MiB, RSS
+5.6 MiB. Pinning the threshold (``MALLOC_MMAP_THRESHOLD_=262144``) kept that heap flat, but
then every frame-sized buffer is a fresh mapping: +1 point of a core per stream, measured
beside the same monitor without it. glibc gives back free memory at the top of the heap only;
``malloc_trim`` also releases the whole free pages inside it (``MADV_DONTNEED``), which is what
this does every ``interval_s`` on a thread of its own (the call releases the GIL, but holds
each arena's lock while it walks that arena's free chunks: measured 26 ms the first time on a
330 MB analysis heap, under 0.1 ms once trimmed). README, Performance, has the soak's figures.

Elsewhere than glibc (musl, macOS) there is no ``malloc_trim``: nothing is started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

TRIM_EVERY_S = 60.0

_started: HeapTrimmer | None = None
_lock = threading.Lock()


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


class HeapTrimmer(threading.Thread):
    """Calls ``malloc_trim(0)`` every ``interval_s`` until ``stop``; counts what it did."""

    def __init__(self, trim: Any, interval_s: float = TRIM_EVERY_S) -> None:
        super().__init__(name="syncmon-heap-trim", daemon=True)
        self._trim = trim
        self.interval_s = interval_s
        self.trims = 0
        self.released = 0  # trims that gave memory back (malloc_trim returned 1)
        self.errors = 0
        self.trimmed = threading.Event()  # set after each trim (for whoever waits on one)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                self.released += int(self._trim(0) == 1)
                self.trims += 1
                self.trimmed.set()
            except Exception as e:  # (a ctypes call that fails once will fail again)
                self.errors += 1
                log.warning("heap trimming stopped: %s: %s", type(e).__name__, e)
                return

    def stop(self) -> None:
        self._stop_event.set()


def start_heap_trimmer(interval_s: float = TRIM_EVERY_S) -> HeapTrimmer | None:
    """Start this process's trimmer (once; later calls return the same one), or None where
    the C library has no ``malloc_trim``."""
    global _started
    with _lock:
        if _started is not None:
            return _started
        trim = _malloc_trim()
        if trim is None:
            log.debug("no malloc_trim in this C library: the heap is not trimmed")
            return None
        _started = HeapTrimmer(trim, interval_s)
        _started.start()
        return _started
