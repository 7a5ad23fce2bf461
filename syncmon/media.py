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
from .analysis.turns import Interruption, Response, Turns
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
    turns: bool = False,
) -> dict[str, Any]:
    """Analyze a recording; returns the report of shared/DESIGN.md. Raises MediaError.

    ``turns``: the recording also holds a user's voice -- in a second audio stream, or as the
    right channel of a stereo one (the avatar's voice in the first stream, or on the left) --
    and the report gains the turns (``analysis.turns``); the lip-sync analysis then hears the
    avatar's voice alone."""
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
        user = _UserVoice.of(path, container) if turns else None
        # the container's average rate counts drops and freezes in; the median interval does not
        an = SyncAnalyzer(config, audio_rate=ANALYSIS_AUDIO_RATE)
        duration = float(container.duration) / av.time_base if container.duration else None
        resampler = av.AudioResampler(
            format="fltp",
            layout="stereo" if user is not None and user.stream is None else "mono",
            rate=ANALYSIS_AUDIO_RATE,
        )
        last_t = 0.0
        audio_t: float | None = None
        video_seen = audio_seen = 0
        t0: float | None = None  # the first timestamp of either stream, taken as zero
        try:
            streams = [vs, aus] if user is None or user.stream is None else [vs, aus, user.stream]
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if frame.pts is None or frame.time is None:
                        continue
                    t = float(frame.time)
                    if t0 is None:
                        t0 = t
                    if (
                        user is not None
                        and user.stream is not None
                        and packet.stream is user.stream
                    ):
                        user.add(frame, t0)
                    elif isinstance(frame, av.VideoFrame):
                        video_seen += 1
                        an.add_video(t - t0, luma_plane(frame))
                        last_t = max(last_t, t)
                    else:
                        audio_seen += 1
                        for rf in resampler.resample(frame):
                            planes = rf.to_ndarray()
                            x = planes[0]
                            start = float(rf.time) - t0 if rf.time is not None else None
                            if audio_t is None and start is None:
                                start = t - t0
                            an.add_audio(x, start)
                            if user is not None:
                                user.avatar(x, start)
                                if user.stream is None:
                                    user.voice(planes[1], start)
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
    if user is not None:
        report["turns"] = user.report(last_t - (t0 or 0.0), report["offset_ms"]["content"])
    nominal = an.video_stats().nominal_interval_s
    report["file"] = {
        "path": str(path),
        "duration_s": round(last_t, 3),
        "nominal_fps": None if not nominal else round(1.0 / nominal, 3),
    }
    return report


class _UserVoice:
    """The user's side of a recording's turns: its audio (a second stream, or the right channel
    of the first) and the avatar's, into ``analysis.turns`` on the file's timeline."""

    def __init__(self, stream: av.audio.stream.AudioStream | None) -> None:
        self.stream = stream
        self.turns = Turns(ANALYSIS_AUDIO_RATE)
        self.turns.add_user("user")
        self.events: list[Response | Interruption] = []
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=ANALYSIS_AUDIO_RATE)
        self._t: dict[str, float] = {}  # where each side's audio runs on, for chunks without time

    @classmethod
    def of(cls, path: Path, container: Any) -> _UserVoice:
        if len(container.streams.audio) >= 2:
            return cls(container.streams.audio[1])
        if container.streams.audio[0].channels >= 2:
            return cls(None)
        raise MediaError(
            f"{path}: --turns needs the user's voice: a second audio stream, or a stereo one "
            "(avatar left, user right); this file has one mono audio stream"
        )

    def _start(self, side: str, start: float | None, n: int) -> float:
        t = self._t.get(side, 0.0) if start is None else start
        self._t[side] = t + n / ANALYSIS_AUDIO_RATE
        return t

    def avatar(self, x: np.ndarray, start: float | None) -> None:
        t = self._start("avatar", start, x.size)
        self.turns.avatar_audio("avatar", x, t, t)
        self.events += self.turns.events(t)

    def voice(self, x: np.ndarray, start: float | None) -> None:
        t = self._start("user", start, x.size)
        self.turns.user_audio("user", x, t, t)
        self.events += self.turns.events(t)

    def add(self, frame: av.AudioFrame, t0: float) -> None:
        for rf in self._resampler.resample(frame):
            self.voice(rf.to_ndarray().reshape(-1), None if rf.time is None else rf.time - t0)

    def report(self, end: float, content_ms: float | None) -> dict[str, Any]:
        # the recording's end: what was still open closes with a second of silence on both
        pad = np.zeros(ANALYSIS_AUDIO_RATE, np.float32)
        self.avatar(pad, max(self._t.values(), default=end))
        self.voice(pad, max(self._t.values(), default=end))
        self.events += self.turns.events(max(self._t.values()) + 60.0)
        audio = [round(e.seconds, 4) for e in self.events if isinstance(e, Response)]
        stops = [e.stop_s for e in self.events if isinstance(e, Interruption)]
        return {
            "response_s": {
                "audio": audio,
                # the mouth: the voice's onset moved by the recording's content offset
                "video": []
                if content_ms is None
                else [round(a + content_ms / 1000.0, 4) for a in audio],
            },
            "interruptions": len(stops),
            "interruption_stop_s": [None if s is None else round(s, 4) for s in stops],
        }


def _why(e: Exception) -> str:
    return str(getattr(e, "strerror", None) or e).strip().splitlines()[0]
