"""The monitor's analysis timed part by part, for ``bench_monitor.py --parts``.

Loaded by the monitor's interpreter only when ``bench_monitor.py --parts`` puts this folder on
its ``PYTHONPATH`` and names a file in ``SYNCMON_BENCH_PARTS``. Once syncmon's live layer is
imported, the analysis' entry points are wrapped: each call's CPU time on its own thread, its
wall time, and the minor page faults and involuntary context switches its thread took
(``getrusage(RUSAGE_THREAD)``), summed per part and written to that file (JSON) at most every
half second: what the calls cost on received pictures, between the SDK's threads, after each
batch's sleep. Not part of syncmon: a benchmark's instrument.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import resource
import sys
import time
from typing import Any

OUT = os.environ.get("SYNCMON_BENCH_PARTS", "")


def _install() -> None:
    from syncmon.analysis import face, lipsync, session

    totals: dict[str, list[float]] = {}
    written = [0.0]

    def write() -> None:
        tmp = f"{OUT}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(totals, f)
        os.replace(tmp, OUT)  # (a reader sees the last whole snapshot, never a partial one)

    def wrap(owner: Any, name: str, part: str) -> None:
        inner = getattr(owner, name)
        totals[part] = [0, 0.0, 0.0, 0, 0]  # (printed in this order)

        def timed(*args: Any, **kwargs: Any) -> Any:
            r0 = resource.getrusage(resource.RUSAGE_THREAD)
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                c1, w1 = time.thread_time(), time.perf_counter()
                r1 = resource.getrusage(resource.RUSAGE_THREAD)
                t = totals[part]
                t[0] += 1
                t[1] += c1 - c0
                t[2] += w1 - w0
                t[3] += r1.ru_minflt - r0.ru_minflt
                t[4] += r1.ru_nivcsw - r0.ru_nivcsw
                if w1 - written[0] > 0.5:
                    written[0] = w1
                    write()

        setattr(owner, name, timed)

    # (nested: a frame's video path holds its grid and face; the audio path holds the content
    # estimates its arrival makes ready)
    wrap(session.SyncAnalyzer, "add_video", "video frame (all)")
    wrap(session, "luma_grid", "luma grid")
    wrap(face.FaceTrack, "update", "face")
    wrap(session.SyncAnalyzer, "add_audio", "audio chunk (all)")
    wrap(lipsync.ContentOffsetEstimator, "estimate", "content estimate")
    wrap(lipsync.ContentOffsetEstimator, "_find_mouth", "  its mouth search")
    wrap(lipsync.ContentOffsetEstimator, "_face_motion", "  its face motion")
    wrap(lipsync.ContentOffsetEstimator, "_picture", "  its picture basis")


class _AfterAnalysis(importlib.abc.MetaPathFinder):
    """Installs the wrappers as the live layer is first imported (it imports the analysis;
    numpy's thread limits are set by then)."""

    done = False

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "syncmon.live.avatar" and not self.done:
            type(self).done = True
            _install()


if OUT:
    sys.meta_path.insert(0, _AfterAnalysis())
