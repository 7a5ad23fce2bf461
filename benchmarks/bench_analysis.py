"""Analysis cost per frame and memory versus session length (issue: foundation).

Prints:
* CPU ms per frame of the per-frame path (luma grid + timing + duplicate check) and of the full
  analyzer including the windowed lip-sync estimates, with and without the face (detection,
  face grid, mouth motion), at 640x360 and 1280x720 (luma only), cartoon and photographic;
* peak traced memory (tracemalloc) of the analyzer over a 1-minute and a 10-minute stream;
* content-offset accuracy over the test matrix's offsets through H.264 at 300 kbps (p50/p95).

Run: python benchmarks/bench_analysis.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from syncmon.analysis import AnalyzerConfig, SyncAnalyzer, luma_grid
from syncmon.analysis.face import FaceTrack
from syncmon.reference import Impairments, ReferenceAvatar
from syncmon.reference.render import RenderOptions, render
from syncmon.threads import limit_numeric_threads


def frames_and_audio(
    width: int, height: int, seconds: float, renderer: str = "synthetic", coded: bool = False
) -> tuple[list, np.ndarray]:
    """The avatar's frames (time, luma) and its audio at 16 kHz: as rendered, or ``coded``:
    through H.264 at what a WebRTC publisher sends (1.5 Mbps at 720p, 500 kbps below) and
    decoded, as a monitor receives them. A rendered picture is exactly flat where the avatar
    does not move, so many cells never vary and the estimator's window matrices are small; a
    received one carries the codec's noise in every cell (the content estimate costs ~2.5
    times as much on it, docs/performance.md)."""
    av_ = ReferenceAvatar(width=width, height=height, renderer=renderer)
    if not coded:
        frames = [(f.pts, f.frame.y) for f in av_.frames(seconds)]
        audio = av_.audio(0, int(seconds * av_.sample_rate)).reshape(-1, 3).mean(axis=1)
        return frames, audio
    rate = 1_500_000 if height >= 720 else 500_000
    frames, chunks = [], []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "avatar.mp4"
        render(av_, path, RenderOptions(duration_s=seconds, video_bitrate=rate))
        for kind, t, x in decoded(path):
            if kind == "video":
                frames.append((t, np.array(x)))
            else:
                chunks.append(x)
    return frames, np.concatenate(chunks)


def decoded(path: Path) -> Iterator[tuple[str, float, np.ndarray]]:
    """A file's pictures and sound as the monitor takes them, in decoding order: ("video",
    time, its luma plane (a view: copy it to keep it)) and ("audio", time, mono float samples at
    the analysis rate)."""
    import av

    from syncmon.media import ANALYSIS_AUDIO_RATE, luma_plane

    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=ANALYSIS_AUDIO_RATE)
        for fr in c.decode(c.streams.video[0], c.streams.audio[0]):
            if isinstance(fr, av.VideoFrame):
                yield "video", float(fr.time), luma_plane(fr)
            else:
                for r in rs.resample(fr):
                    yield "audio", float(r.time), r.to_ndarray().reshape(-1)


def cpu_per_frame(
    width: int,
    height: int,
    seconds: float = 20.0,
    renderer: str = "synthetic",
    coded: bool = False,
) -> tuple[float, float, float]:
    """ms per frame: the luma grid; the full analyzer; the full analyzer without the face."""
    frames, audio = frames_and_audio(width, height, seconds, renderer, coded)
    t0 = time.process_time()
    for _t, y in frames:
        luma_grid(y)
    grid_ms = (time.process_time() - t0) * 1000 / len(frames)
    FaceTrack().available  # noqa: B018  (the cascade's model is read once per thread)
    full = [analyzer_ms(frames, audio, face) for face in (True, False)]
    return grid_ms, full[0], full[1]


def analyzer_ms(frames: list, audio: np.ndarray, face: bool) -> float:
    an = SyncAnalyzer(AnalyzerConfig(nominal_fps=25, face=face), audio_rate=16000)
    chunk = 320
    pos = 0
    t0 = time.process_time()
    for t, y in frames:
        while pos < (t + 0.6) * 16000 and pos + chunk <= audio.size:
            an.add_audio(audio[pos : pos + chunk], pos / 16000)
            pos += chunk
        an.add_video(t, y)
    return (time.process_time() - t0) * 1000 / len(frames)


def peak_memory(minutes: float) -> float:
    """Peak traced MiB of an analyzer fed ``minutes`` of 25 fps grids and 16 kHz audio."""
    av = ReferenceAvatar(width=320, height=180)
    cycle = [f.frame.y for f in av.frames(8.0)]
    audio = av.audio(0, 8 * av.sample_rate).reshape(-1, 3).mean(axis=1)
    gc.collect()
    tracemalloc.start()
    an = SyncAnalyzer(AnalyzerConfig(nominal_fps=25), audio_rate=16000)
    n = int(minutes * 60 * 25)
    for k in range(n):
        t = k / 25
        if k % 2 == 0:
            i = int((k % 200) / 25 * 16000)
            an.add_audio(audio[i : i + 1280], t)
        an.add_video(t, cycle[k % len(cycle)])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def accuracy(quick: bool) -> tuple[float, float, int]:
    from syncmon.media import ANALYSIS_AUDIO_RATE

    offsets = [-200, -120, -60, -20, 0, 40, 80, 160]
    if quick:
        offsets = [-120, 80]
    errs: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        for i, off in enumerate(offsets):
            path = Path(d) / f"{off}.mp4"
            render(
                ReferenceAvatar(impairments=Impairments(offset_ms=off, seed=i)),
                path,
                RenderOptions(duration_s=16.0),
            )
            an = SyncAnalyzer(
                audio_rate=ANALYSIS_AUDIO_RATE,
                on_estimate=lambda _m, e, o=off: (
                    errs.append(e.offset_s * 1000 - o) if e.offset_s is not None else None
                ),
            )
            for kind, t, x in decoded(path):
                if kind == "video":
                    an.add_video(t, x)
                else:
                    an.add_audio(x, t)
    e = np.abs(np.asarray(errs))
    return float(np.percentile(e, 50)), float(np.percentile(e, 95)), e.size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs (CI smoke)")
    args = ap.parse_args()
    secs = 6.0 if args.quick else 20.0
    # as the monitor's commands run it (syncmon.threads): an idle BLAS pool spinning beside
    # the analysis doubled the process time measured here, but is not what the monitor costs
    limit_numeric_threads()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    for coded in (False, True):
        for renderer in ("synthetic", "photo"):
            for w, h in ((640, 360), (1280, 720)):
                g, f, nf = cpu_per_frame(w, h, secs, renderer, coded)
                print(
                    f"{renderer} {w}x{h}{', received (H.264)' if coded else ', as rendered'}: "
                    f"luma grid {g:.3f} ms/frame; full analysis {f:.3f} ms/frame, of which "
                    f"the face {f - nf:.3f} (goal <= 1 ms at 720p)",
                    flush=True,
                )
    m1 = peak_memory(0.25 if args.quick else 1.0)
    m10 = peak_memory(0.5 if args.quick else 10.0)
    label = ("15 s", "30 s") if args.quick else ("1-minute", "10-minute")
    print(f"peak analyzer memory: {label[0]} stream {m1:.2f} MiB, {label[1]} stream {m10:.2f} MiB")
    p50, p95, n = accuracy(args.quick)
    print(
        f"content offset |error| over {n} 8 s windows (H.264 300 kbps, 640x360@25): "
        f"p50 {p50:.1f} ms, p95 {p95:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
