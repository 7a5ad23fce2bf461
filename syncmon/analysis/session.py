"""One avatar's audio and video in, the report of shared/DESIGN.md out.

``SyncAnalyzer`` ties the timing, audio, content lip-sync and drift analyzers together for one
stream pair. It is what ``analyze``, ``watch`` and ``worker`` all feed; it does no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..marks import TimingMark
from ..thresholds import verdict
from .audio import ANALYSIS_RATE, AudioAnalyzer
from .drift import DriftEstimate, DriftEstimator
from .face import FaceFrame, FaceTrack
from .lipsync import DEFAULT_GRID, ContentOffsetEstimator, LipSyncConfig, LipSyncEstimate, luma_grid
from .receiver import ReceiverDelay
from .timestamp import SPLIT_MAX_S, TimestampEstimate, TimestampOffsetEstimator
from .video import VideoFrameEvent, VideoTimingAnalyzer, VideoTimingStats

log = logging.getLogger(__name__)

METHODS = ("content", "timestamp", "playout")
MAX_WAITING = 8  # timestamp estimates waiting for the receiver's next stats poll
# offsets kept for the median as a 1 ms histogram over ±1 s: bounded whatever the length
_HIST_RANGE_MS = 1000


class OffsetHistogram:
    """Median of many offsets in constant memory (1 ms bins)."""

    def __init__(self) -> None:
        self._bins = np.zeros(2 * _HIST_RANGE_MS + 1, dtype=np.int64)
        self.count = 0

    def add(self, offset_s: float) -> None:
        i = int(round(offset_s * 1000.0)) + _HIST_RANGE_MS
        self._bins[min(max(i, 0), self._bins.size - 1)] += 1
        self.count += 1

    def median_ms(self) -> float | None:
        if self.count == 0:
            return None
        c = np.cumsum(self._bins)
        return float(np.searchsorted(c, (self.count + 1) / 2.0) - _HIST_RANGE_MS)


@dataclass(frozen=True)
class AnalyzerConfig:
    nominal_fps: float | None = None
    grid: tuple[int, int] = DEFAULT_GRID
    lipsync: LipSyncConfig = field(default_factory=LipSyncConfig)
    drift_window_s: float = 600.0
    # find the face (face.FaceTrack) so that a mouth frozen from the start is counted still
    face: bool = True


@dataclass
class OffsetState:
    """Latest estimate per method (seconds) and its confidence."""

    offset_s: float | None = None
    confidence: float = 0.0


@dataclass(frozen=True)
class AnalyzerSnapshot:
    """What the analysis says now, read at once: what exposition and reports render."""

    offsets: dict[str, OffsetState]  # per method: the latest estimate and its confidence
    drift_s_per_min: float | None
    video: VideoTimingStats
    audio_gap_s: float
    viewer_sync: bool | None
    lip_still_s: float
    lip_still_episodes: int
    # frames the avatar's face was found and tracked in (None: the face is not looked for), and
    # the face's detections and measurements that failed: where it is not seen, a mouth is judged
    # still by the voice's correlation alone and one frozen from the start is never counted
    face_frames: int | None = None
    face_errors: int = 0
    # the content estimator's windows by what they gave (WINDOW_RESULTS): where the voice
    # speaks and no offset comes, the content offset (and every alert on it) is blind
    content_windows: dict[str, int] = field(default_factory=dict)


# a content window published an offset; the voice spoke in it and none was published (no
# mouth found, not sure enough, the mouth still, the receiver's delay not yet measured); or
# too little of it spoke (silence, an idle avatar) to judge
WINDOW_RESULTS = ("measured", "unmeasured", "no_speech")


class SyncAnalyzer:
    """Streaming analysis of one avatar's audio and video."""

    def __init__(
        self,
        config: AnalyzerConfig | None = None,
        *,
        audio_rate: int = ANALYSIS_RATE,
        on_estimate: Callable[[str, LipSyncEstimate | TimestampEstimate], None] | None = None,
        live_receiver: bool = False,
    ) -> None:
        """``live_receiver``: the streams come from a live WebRTC receiver whose own A/V delay
        difference the monitor measures (``receiver_poll``): content estimates wait for its
        first reading, timestamp estimates for the reading after them."""
        self.config = config or AnalyzerConfig()
        self.video = VideoTimingAnalyzer(nominal_fps=self.config.nominal_fps)
        self.audio = AudioAnalyzer(sample_rate=audio_rate)
        self.content = ContentOffsetEstimator(self.config.lipsync)
        # live: face detections off the event loop (see FaceTrack)
        self.face = FaceTrack(background=live_receiver) if self.config.face else None
        self.drift = DriftEstimator(window_s=self.config.drift_window_s)
        self.timestamp = TimestampOffsetEstimator(sample_rate=audio_rate)
        self.last_timestamp: TimestampEstimate | None = None
        self.offsets: dict[str, OffsetState] = {m: OffsetState() for m in METHODS}
        self.content_median = OffsetHistogram()
        self.content_windows = dict.fromkeys(WINDOW_RESULTS, 0)
        self._on_estimate = on_estimate
        self.playout_source: str | None = None
        # the receiver's own A/V delay difference (video minus audio jitter buffer), which a
        # viewer's player would equalize from RTCP; subtracted from content estimates. None: a
        # live receiver has not measured it yet, and content estimates are withheld till it has
        self.receiver_bias_s: float | None = None if live_receiver else 0.0
        # whether viewers lip-sync the avatar's audio and video: True when the receiver puts
        # them in one sync group (livekit-server's room.sync_streams gives both tracks one
        # WebRTC stream id; libwebrtc then reports estimatedPlayoutTimestamp, which it leaves
        # 0 otherwise), False when it plays each as it arrives, None unknown (a recording).
        # A viewer that does not sync plays the receiver's own A/V delay difference too: the
        # content offset then keeps it (what the viewer sees); timestamp never does (capture to
        # arrival)
        self.viewer_sync: bool | None = None
        self.received_content_s: float | None = None
        # a live receiver's bias over time (set by the live monitor): a timestamp estimate then
        # waits for the stats poll after it and takes the bias at its own instant
        self.receiver: ReceiverDelay | None = ReceiverDelay() if live_receiver else None
        self._ts_waiting: list[TimestampEstimate] = []
        self.timestamp_published = 0
        self.timestamp_withheld = 0

    def finish(self) -> None:
        """The streams ended (a recording's end): account what the last windows left."""
        self.content.finish()

    def discontinuity(self) -> None:
        """The streams were interrupted (reconnect): start timing and windows afresh."""
        self.video.restart()
        self.content.clear()
        self.timestamp.clear()

    def add_video(
        self,
        t: float,
        luma: np.ndarray,
        *,
        frame_id: int | None = None,
        sender_time: float | None = None,
    ) -> VideoFrameEvent:
        """Account one video frame by its 8-bit luma plane, arriving at ``t`` seconds."""
        grid = luma_grid(luma, self.config.grid)
        face = None if self.face is None else self.face.update(t, luma)
        return self.add_video_grid(t, grid, frame_id=frame_id, sender_time=sender_time, face=face)

    def add_video_grid(
        self,
        t: float,
        grid: np.ndarray,
        *,
        frame_id: int | None = None,
        sender_time: float | None = None,
        face: FaceFrame | None = None,
    ) -> VideoFrameEvent:
        event = self.video.add_frame(t, frame_id=frame_id, sender_time=sender_time, grid=grid)
        self.content.add_video(t, grid, face)
        self.timestamp.add_video(t, frame_id, sender_time)
        self._poll()
        return event

    def add_audio(self, samples: np.ndarray, t_start: float | None = None) -> None:
        """Feed mono float audio at the analyzer's rate; ``t_start`` of the first sample."""
        env = self.audio.add(samples, t_start)
        self.content.add_envelope(env.t, env.rms)
        self._poll()
        if t_start is not None:
            self._timestamp_estimates(self.timestamp.add_audio(samples, t_start))

    def add_mark(self, mark: TimingMark) -> None:
        """A timing mark from an instrumented avatar (``syncmon.marks``)."""
        self._timestamp_estimates(self.timestamp.add_mark(mark))

    def _timestamp_estimates(self, ests: list[TimestampEstimate]) -> None:
        if self.receiver is None:
            for est in ests:
                if self._continuous(est):
                    self._publish_timestamp(est, self.receiver_bias_s)
            return
        for est in ests:
            self.receiver.add_transit(est.t, est.transit_v_s)
        ests = [e for e in ests if self._continuous(e)]
        self._ts_waiting.extend(ests)
        self._resolve_timestamps()

    def _continuous(self, est: TimestampEstimate) -> bool:
        """Did the utterance's audio play out as it was sent? A gap or stretch inside the
        matched 400 ms (an underrun at the sender, concealment here) puts the match between
        the audio before and after it: no single offset is right, none is published."""
        if abs(est.split_s) <= SPLIT_MAX_S:
            return True
        self._publish_timestamp(
            est, None, f"its audio was not continuous (halves {est.split_s * 1e3:.1f} ms apart)"
        )
        return False

    def receiver_poll(
        self,
        t: float,
        *,
        video: tuple[float, int] | None,
        audio: tuple[float, int] | None,
        stretch_s: float | None,
    ) -> None:
        """A live receiver's stats poll (``ReceiverDelay.poll``): the bias, and the timestamp
        estimates that waited for it."""
        if self.receiver is None:
            self.receiver = ReceiverDelay()
        self.receiver.poll(t, video=video, audio=audio, stretch_s=stretch_s)
        self.receiver_bias_s = self.receiver.window_bias_s
        self._resolve_timestamps()

    def _resolve_timestamps(self) -> None:
        assert self.receiver is not None
        waiting: list[TimestampEstimate] = []
        for est in self._ts_waiting:
            bias = self.receiver.bias_at(est.t)
            if bias is None:
                waiting.append(est)
            elif isinstance(bias, float):
                self._publish_timestamp(est, bias)
            else:
                self._publish_timestamp(est, None, bias)
        # stats that stopped coming leave no estimate waiting for ever
        for est in waiting[:-MAX_WAITING]:
            self._publish_timestamp(est, None, "no stats poll came after it")
        self._ts_waiting = waiting[-MAX_WAITING:]

    def _publish_timestamp(self, est: TimestampEstimate, bias: float | None, why: str = "") -> None:
        if bias is None:
            self.timestamp_withheld += 1
            log.debug(
                "timestamp estimate withheld: %s",
                why or "the receiver's jitter buffers not measured yet",
            )
            return
        self.timestamp_published += 1
        est = replace(est, offset_s=est.offset_s - bias)
        if est.skew_exact:
            log.debug(
                "utterance %d: timestamp offset %.1f ms (sender skew %.1f ms, transport %.1f ms, "
                "receiver bias %.1f ms, r=%.3f, transit v %.1f a %.1f ms)",
                est.seq,
                est.offset_s * 1000.0,
                est.skew_s * 1000.0,
                (est.offset_s - est.skew_s) * 1000.0,
                bias * 1000.0,
                est.correlation,
                est.transit_v_s * 1000.0,
                est.transit_a_s * 1000.0,
            )
        else:  # (the sender knows only the earliest its audio left)
            log.debug(
                "utterance %d: timestamp offset %.1f ms (sender skew <= %.1f ms, receiver bias "
                "%.1f ms, r=%.3f)",
                est.seq,
                est.offset_s * 1000.0,
                est.skew_s * 1000.0,
                bias * 1000.0,
                est.correlation,
            )
        self.last_timestamp = est
        self.offsets["timestamp"] = OffsetState(est.offset_s, est.correlation)
        if self._on_estimate is not None:
            self._on_estimate("timestamp", est)

    def _poll(self) -> None:
        est = self.content.poll()
        if est is None:
            return
        if est.offset_s is not None and self.receiver_bias_s is not None:
            self.content_windows["measured"] += 1
        elif est.speech_fraction >= self.config.lipsync.min_speech_fraction:
            self.content_windows["unmeasured"] += 1
        else:
            self.content_windows["no_speech"] += 1
        if est.offset_s is not None:
            if self.receiver_bias_s is None:
                return
            bias = 0.0 if self.viewer_sync is False else self.receiver_bias_s
            log.debug(
                "content offset %.1f ms (as received %.1f ms, receiver bias %.1f ms, "
                "viewers sync: %s, confidence %.2f)",
                (est.offset_s - bias) * 1000.0,
                est.offset_s * 1000.0,
                self.receiver_bias_s * 1000.0,
                self.viewer_sync,
                est.confidence,
            )
            self.received_content_s = est.offset_s
            est = replace(est, offset_s=est.offset_s - bias)
        state = self.offsets["content"]
        state.confidence = est.confidence
        if est.offset_s is not None:
            state.offset_s = est.offset_s
            self.content_median.add(est.offset_s)
            self.drift.add(est.t, est.offset_s)
        if self._on_estimate is not None:
            self._on_estimate("content", est)

    def set_offset(self, method: str, offset_s: float | None, confidence: float) -> None:
        """Record an estimate made outside the content estimator (timestamp, playout)."""
        self.offsets[method] = OffsetState(offset_s, confidence)

    def video_stats(self) -> VideoTimingStats:
        return self.video.stats()

    def snapshot(self) -> AnalyzerSnapshot:
        d = self.drift.estimate()
        still = self.content.lip_still
        return AnalyzerSnapshot(
            offsets={m: replace(o) for m, o in self.offsets.items()},
            drift_s_per_min=None if d is None else d.ms_per_min / 1000.0,
            video=self.video.stats(),
            audio_gap_s=self.audio.gap_seconds,
            viewer_sync=self.viewer_sync,
            lip_still_s=still.seconds,
            lip_still_episodes=still.episodes,
            face_frames=None if self.face is None else self.face.frames,
            face_errors=self.face_errors,
            content_windows=dict(self.content_windows),
        )

    @property
    def face_errors(self) -> int:
        """The face's detections and the mouth's measurements on it that failed (logged)."""
        return (0 if self.face is None else self.face.errors) + self.content.face_errors

    def drift_estimate(self) -> DriftEstimate | None:
        return self.drift.estimate()

    def report(self, *, summary: bool = False) -> dict[str, Any]:
        """The JSON report of shared/DESIGN.md.

        ``summary`` reports the median of all confident content estimates (a recording) instead
        of the latest one (a live stream).
        """
        v = self.video.stats()
        offsets_ms: dict[str, float | None] = {}
        for m, st in self.offsets.items():
            off = st.offset_s
            if m == "content" and summary:
                med = self.content_median.median_ms()
                offsets_ms[m] = med
            else:
                offsets_ms[m] = None if off is None else round(off * 1000.0, 1)
        drift = self.drift.estimate()
        # the viewer's truth first; the pipeline's view when the picture gives none
        headline = next(
            (offsets_ms[m] for m in ("content", "timestamp") if offsets_ms[m] is not None), None
        )
        out = {
            "offset_ms": offsets_ms,
            "confidence": {m: round(st.confidence, 3) for m, st in self.offsets.items()},
            "video": {
                "frames": v.frames,
                "dropped": v.dropped,
                "duplicated": v.duplicated,
                "freezes": v.freezes,
                "freeze_seconds": round(v.freeze_seconds, 4),
                "pauses": v.pauses,
                "jitter_ms": round(v.jitter_s * 1000.0, 3),
                "jitter_avg_ms": round(v.jitter_avg_s * 1000.0, 3),
                "fps": None if v.fps is None else round(v.fps, 3),
                "harmonic_fps": None if v.harmonic_fps is None else round(v.harmonic_fps, 3),
            },
            "audio": {
                "gap_seconds": round(self.audio.gap_seconds, 4),
                "gaps": self.audio.gaps,
                # "receiver": audio the live receiver had to make up; "signal": silences cut
                # into speech, from a recording (see syncmon.analysis.audio)
                "gap_source": self.audio.gap_source,
            },
            "lip_still": {
                "seconds": round(self.content.lip_still.seconds, 2),
                "episodes": self.content.lip_still.episodes,
            },
            # whether the lip-still account saw the face (null: not looked for, --no-face)
            "face": (
                None
                if self.face is None
                else {
                    "frames": self.face.frames,
                    "share": round(self.face.frames / v.frames, 3) if v.frames else None,
                    "errors": self.face_errors,
                }
            ),
            "drift_ms_per_min": None if drift is None else round(drift.ms_per_min, 3),
            "clock_skew_ppm": None if drift is None else round(drift.skew_ppm, 1),
            "content_estimates": self.content_median.count,
            # the content windows by what they gave: "unmeasured" where the voice spoke and
            # no offset came (see WINDOW_RESULTS)
            "content_windows": dict(self.content_windows),
            "timestamp_estimates": self.timestamp_published,
            "timestamp_withheld": self.timestamp_withheld,
            # the latest estimate's; null when its sender knew only the earliest its audio left
            "sender_skew_ms": (
                round(self.last_timestamp.skew_s * 1e3, 1)
                if self.last_timestamp is not None and self.last_timestamp.skew_exact
                else None
            ),
            "playout_source": self.playout_source,
            # which offset a viewer sees (see viewer_sync above); the content offset as this
            # receiver got it, and its own A/V jitter-buffer difference, for transport debugging
            "viewer_sync": self.viewer_sync,
            "received_content_ms": (
                None
                if self.received_content_s is None
                else round(self.received_content_s * 1000.0, 1)
            ),
            "receiver_bias_ms": (
                None if self.receiver_bias_s is None else round(self.receiver_bias_s * 1000.0, 1)
            ),
            "verdict": verdict(None if headline is None else headline / 1000.0),
        }
        if summary:
            # a recording's time: when its first picture that moves with the speech shows
            # (live, the same is a start-up stage measured from the avatar's join)
            moving = self.content.moving_at
            out["mouth_moving_s"] = None if moving is None else round(moving, 3)
        return out
