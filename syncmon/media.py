"""Read a recording with PyAV and feed it to the analyzer (``syncmon analyze``).

Video timing comes from presentation timestamps, audio from the audio stream resampled to the
analyzer's rate by libswresample. Only the luma plane of each picture is read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from .analysis.audio import ANALYSIS_RATE
from .analysis.session import AnalyzerConfig, SyncAnalyzer
from .errors import MediaError

ANALYSIS_AUDIO_RATE = ANALYSIS_RATE
# a recording that stops this far before its declared duration was cut short
TRUNCATION_TOLERANCE_S = 1.0


def luma_plane(frame: av.VideoFrame) -> np.ndarray:
    """The 8-bit luma plane of a decoded frame without converting the picture."""
    if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "nv12", "gray"):
        frame = frame.reformat(format="gray")
    plane = frame.planes[0]
    arr = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return arr[:, : frame.width]


def analyze_file(
    path: str | Path,
    config: AnalyzerConfig | None = None,
    *,
    progress: Callable[[float, float], None] | None = None,
) -> dict[str, Any]:
    """Analyze a recording; returns the report of shared/DESIGN.md. Raises MediaError."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise MediaError(
            f"{path}: not a media file PyAV can read, or cut before its index ({_why(e)})"
        ) from e
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        if not container.streams.audio:
            raise MediaError(f"{path}: has no audio stream")
        vs = container.streams.video[0]
        aus = container.streams.audio[0]
        # the container's average rate counts drops and freezes in; the median interval does not
        an = SyncAnalyzer(config, audio_rate=ANALYSIS_AUDIO_RATE)
        duration = float(container.duration) / av.time_base if container.duration else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=ANALYSIS_AUDIO_RATE)
        last_t = 0.0
        audio_t: float | None = None
        video_seen = audio_seen = 0
        t0: float | None = None  # the first timestamp of either stream, taken as zero
        try:
            for frame in container.decode(vs, aus):
                if frame.pts is None or frame.time is None:
                    continue
                t = float(frame.time)
                if t0 is None:
                    t0 = t
                if isinstance(frame, av.VideoFrame):
                    video_seen += 1
                    an.add_video(t - t0, luma_plane(frame))
                    last_t = max(last_t, t)
                else:
                    audio_seen += 1
                    for rf in resampler.resample(frame):
                        x = rf.to_ndarray().reshape(-1)
                        start = float(rf.time) - t0 if rf.time is not None else None
                        if audio_t is None and start is None:
                            start = t - t0
                        an.add_audio(x, start)
                        audio_t = start
                    last_t = max(last_t, t)
                if progress is not None and duration:
                    progress(last_t, duration)
        except av.FFmpegError as e:
            raise MediaError(f"{path}: truncated or corrupt at {last_t:.2f} s ({_why(e)})") from e
        except ValueError as e:
            raise MediaError(f"{path}: cannot be analyzed at {last_t:.2f} s ({e})") from e
        if video_seen == 0:
            raise MediaError(f"{path}: the video stream holds no decodable frame")
        if audio_seen == 0:
            raise MediaError(f"{path}: the audio stream holds no decodable frame")
        if duration is not None and last_t + TRUNCATION_TOLERANCE_S < duration:
            raise MediaError(
                f"{path}: truncated: media ends at {last_t:.2f} s of a declared {duration:.2f} s"
            )
    an.finish()
    report = an.report(summary=True)
    nominal = an.video_stats().nominal_interval_s
    report["file"] = {
        "path": str(path),
        "duration_s": round(last_t, 3),
        "nominal_fps": None if not nominal else round(1.0 / nominal, 3),
    }
    return report


def _why(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or e).strip().splitlines()[0]
