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

Because it does, glibc's own trimming is turned down for the received frames
(``fit_to_frames``): the SDK's native threads allocate every decoded frame (1.4 MB at 720p)
in their arenas, and the monitor frees them a batch at a time (``live.avatar``: up to 0.2 s of
frames); a batch freed at an arena's top crossed glibc's trim threshold (twice the largest
block it had seen freed) and was given back, so every next frame's pages were faulted in and
zeroed again. Measured per thread at 720p25 beside a bare subscriber (which frees one frame
before the next is decoded): the SDK's tokio threads 2.2-2.5 % of a core against 1.4-1.6 %,
page faults and memset most of the difference; fitted, 0.1-0.2 points more (1.72-2.07 %
against 1.65-1.90 %). Setting one threshold stops glibc adjusting both, so the mmap threshold
is set too, where glibc's adjustment had put it: just above the largest frame. (Set far
higher, at 32 MiB, it kept the estimator's multi-MB windows on the heap as well, and a
worker's two processes held 50-100 MiB more at 8 rooms.)

Elsewhere than glibc (musl, macOS) there is no ``malloc_trim``: nothing is started or fitted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

TRIM_EVERY_S = 60.0
# a block this much larger than the largest frame is still mapped (as glibc's own adjustment
# would have it: the estimator's windows are)
MMAP_SLACK = 64 << 10
# free memory at an arena's top is kept up to this many frames (a batch is 5-6; the trimmer
# gives what is left free back once a minute)
TRIM_FRAMES = 16
# glibc's largest mmap threshold on 64-bit: a frame larger than it (a participant's absurd
# resolution) is mapped whatever is set, and fits nothing
MMAP_MAX = 32 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)

_started: HeapTrimmer | None = None
_fitted: int | None = None  # the frame size fitted to (0: none yet; None: not to be tuned)
_lock = threading.Lock()


def _libc_fn(fn_name: str, argtypes: list[Any]) -> Any:
    """A function of glibc's allocator, or None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = getattr(ctypes.CDLL(name), fn_name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where there is none."""
    return _libc_fn("malloc_trim", [ctypes.c_size_t])


def fit_to_frames(frame_bytes: int) -> bool:
    """Fit glibc's mmap and trim thresholds to received frames of ``frame_bytes`` (see the
    module's docstring), if they are larger than any before; True if they were set. Nothing
    before ``start_heap_trimmer`` ran in this process: an application's allocator (with
    ``syncmon.instrument`` inside it) is not syncmon's to tune."""
    global _fitted
    with _lock:
        if _fitted is None or frame_bytes <= _fitted or frame_bytes + MMAP_SLACK > MMAP_MAX:
            return False
        mallopt = _libc_fn("mallopt", [ctypes.c_int, ctypes.c_int])
        if mallopt is None:
            _fitted = None
            return False
        # (mallopt returns 1 on success)
        ok = mallopt(_M_MMAP_THRESHOLD, frame_bytes + MMAP_SLACK) == 1
        ok = mallopt(_M_TRIM_THRESHOLD, TRIM_FRAMES * frame_bytes) == 1 and ok
        if not ok:
            log.warning("glibc's malloc thresholds could not be set: frames may cost more")
            _fitted = None
            return False
        _fitted = frame_bytes
        log.debug("malloc thresholds fitted to frames of %d bytes", frame_bytes)
        return True


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
    the C library has no ``malloc_trim``. For syncmon's own processes (watch, worker), never
    inside an application's: it also lets ``fit_to_frames`` tune the allocator."""
    global _started, _fitted
    with _lock:
        if _started is not None:
            return _started
        trim = _malloc_trim()
        if trim is None:
            log.debug("no malloc_trim in this C library: the heap is not trimmed")
            return None
        _fitted = 0  # syncmon's own process: its thresholds may be fitted to its frames
        _started = HeapTrimmer(trim, interval_s)
        _started.start()
        return _started
