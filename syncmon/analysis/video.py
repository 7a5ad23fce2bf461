"""Video frame timing: intervals, jitter, freezes, pauses, frame rate, drops and duplicates.

Definitions (shared/DESIGN.md):

* Jitter is RFC 3550 §6.4.1 applied to frames: ``D = (Rj - Ri) - (Sj - Si)``,
  ``J += (|D| - J) / 16``. ``S`` is the sender timestamp when the frame carries one
  (FrameMetadata ``user_timestamp``), else the nominal frame interval times the number of
  frame slots between the two frames.
* A freeze follows webrtc-stats ``freezeCount``: an interval ``>= max(3 * avg, avg + 150 ms)``
  where ``avg`` is the mean of the previous 30 intervals; the interval's duration is added to
  the freeze total. An interval longer than 5 s is a pause, not a freeze.
* Harmonic frame rate is ``sum(d) / sum(d**2)`` over the intervals of a window; the inter-frame
  delay variance is the population variance of those intervals (webrtc-stats
  ``totalSquaredInterFrameDelay``).
* Drops are gaps in ``frame_id`` when frames carry one; otherwise an interval of ``k`` nominal
  intervals (``k >= 2``, rounded) that is not a freeze counts ``k - 1`` drops.
* A duplicate is a frame whose picture did not change: every cell of the luma grid moved by
  less than ``duplicate_tolerance`` levels (a lossy codec re-encodes an identical picture with
  sub-level noise, so exact equality would miss them).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

FREEZE_HISTORY = 30
NOMINAL_HISTORY = 300
NOMINAL_MIN_SAMPLES = 5
MEDIAN_EVERY = 25
FREEZE_MIN_EXTRA_S = 0.150
FREEZE_FACTOR = 3.0
PAUSE_S = 5.0
JITTER_GAIN = 1.0 / 16.0
DEFAULT_DUPLICATE_TOLERANCE = 0.5
DEFAULT_RATE_WINDOW_S = 5.0
# timestamps are sums of floats: compare against thresholds to the microsecond
TIME_EPS_S = 1e-6


def freeze_threshold(avg_interval: float) -> float:
    """The webrtc-stats freeze threshold for a mean interval (seconds)."""
    return max(FREEZE_FACTOR * avg_interval, avg_interval + FREEZE_MIN_EXTRA_S)


def rfc3550_update(jitter: float, transit_delta: float) -> float:
    """One step of the RFC 3550 interarrival jitter estimator."""
    return jitter + (abs(transit_delta) - jitter) * JITTER_GAIN


def harmonic_fps(intervals: np.ndarray) -> float | None:
    """Harmonic frame rate ``sum(d) / sum(d**2)`` of a set of intervals (seconds)."""
    if intervals.size == 0:
        return None
    sq = float(np.sum(intervals * intervals))
    return float(np.sum(intervals)) / sq if sq > 0 else None


@dataclass(frozen=True)
class VideoFrameEvent:
    """What one frame did to the timing counters."""

    interval_s: float | None
    dropped: int
    duplicate: bool
    freeze_s: float | None
    pause: bool


@dataclass(frozen=True)
class VideoTimingStats:
    """Cumulative and windowed video timing."""

    frames: int
    dropped: int
    duplicated: int
    freezes: int
    freeze_seconds: float
    pauses: int
    jitter_s: float
    jitter_avg_s: float
    fps: float | None
    harmonic_fps: float | None
    interframe_delay_variance_s2: float | None
    last_frame_time: float | None
    nominal_interval_s: float | None


class VideoTimingAnalyzer:
    """Streaming frame-timing analyzer; memory is bounded by its windows, not by session length."""

    def __init__(
        self,
        *,
        nominal_fps: float | None = None,
        rate_window_s: float = DEFAULT_RATE_WINDOW_S,
        duplicate_tolerance: float = DEFAULT_DUPLICATE_TOLERANCE,
    ) -> None:
        if nominal_fps is not None and nominal_fps <= 0:
            raise ValueError(f"nominal_fps must be positive, got {nominal_fps}")
        self._nominal = 1.0 / nominal_fps if nominal_fps else None
        self._rate_window_s = rate_window_s
        self._dup_tol = duplicate_tolerance
        self._recent: deque[float] = deque(maxlen=FREEZE_HISTORY)
        self._recent_sum = 0.0  # running sum of _recent: the mean is needed at every frame
        # (arrival time, interval) pairs within the rate window
        self._window: deque[tuple[float, float]] = deque()
        self._frames = 0
        self._dropped = 0
        self._duplicated = 0
        self._freezes = 0
        self._freeze_s = 0.0
        self._pauses = 0
        self._jitter = 0.0
        self._jitter_sum = 0.0
        self._jitter_n = 0
        self._last_t: float | None = None
        self._last_sender_t: float | None = None
        self._last_id: int | None = None
        self._last_grid: np.ndarray | None = None
        # recent ordinary intervals, whose median is the nominal interval when none is given
        self._interval_sample: deque[float] = deque(maxlen=NOMINAL_HISTORY)
        self._median: float | None = None
        self._median_age = 0  # intervals added since it was computed

    @property
    def nominal_interval(self) -> float | None:
        if self._nominal is not None:
            return self._nominal
        n = len(self._interval_sample)
        if n < NOMINAL_MIN_SAMPLES:
            return None
        # (a median of NOMINAL_HISTORY intervals moves by little in a second: recomputed once
        # a second's worth of frames, not every frame)
        if self._median is None or self._median_age >= MEDIAN_EVERY or n < 2 * MEDIAN_EVERY:
            self._median = float(np.median(np.asarray(self._interval_sample)))
            self._median_age = 0
        return self._median

    def add_frame(
        self,
        t: float,
        *,
        frame_id: int | None = None,
        sender_time: float | None = None,
        grid: np.ndarray | None = None,
    ) -> VideoFrameEvent:
        """Account one frame that arrived (or is presented) at ``t`` seconds."""
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"frame time went backwards: {t:.6f} < {self._last_t:.6f}")
        self._frames += 1
        interval = None if self._last_t is None else t - self._last_t
        dropped = 0
        duplicate = False
        freeze_s: float | None = None
        pause = False

        if grid is not None:
            if self._last_grid is not None and self._last_grid.shape == grid.shape:
                duplicate = bool(np.max(np.abs(grid - self._last_grid)) < self._dup_tol)
            self._last_grid = grid
        if duplicate:
            self._duplicated += 1

        if interval is not None:
            is_freeze = False
            if interval > PAUSE_S + TIME_EPS_S:
                pause = True
                self._pauses += 1
            elif len(self._recent) > 0:
                avg = self._recent_sum / len(self._recent)
                if interval >= freeze_threshold(avg) - TIME_EPS_S:
                    is_freeze = True
                    freeze_s = interval
                    self._freezes += 1
                    self._freeze_s += interval
            nominal = self.nominal_interval
            slots = 1
            if frame_id is not None and self._last_id is not None:
                gap = frame_id - self._last_id
                dropped = max(0, gap - 1)
                slots = max(1, gap)
            elif nominal is not None and not is_freeze and not pause:
                slots = max(1, int(round(interval / nominal)))
                dropped = slots - 1
            self._dropped += dropped
            # jitter: transit difference against the sender's own spacing
            if sender_time is not None and self._last_sender_t is not None:
                sender_delta: float | None = sender_time - self._last_sender_t
            elif nominal is not None:
                sender_delta = slots * nominal
            else:
                sender_delta = None
            if sender_delta is not None and not pause and not is_freeze:
                self._jitter = rfc3550_update(self._jitter, interval - sender_delta)
                self._jitter_sum += self._jitter
                self._jitter_n += 1
            # libwebrtc keeps freezes out of the mean the next threshold is taken from
            if not pause and not is_freeze:
                if len(self._recent) == FREEZE_HISTORY:
                    self._recent_sum -= self._recent[0]
                self._recent.append(interval)
                self._recent_sum += interval
                self._interval_sample.append(interval)
                self._median_age += 1
            self._window.append((t, interval))
        self._trim(t)
        self._last_t = t
        if sender_time is not None:
            self._last_sender_t = sender_time
        if frame_id is not None:
            self._last_id = frame_id
        return VideoFrameEvent(interval, dropped, duplicate, freeze_s, pause)

    def restart(self) -> None:
        """Forget the last frame (a reconnect is not a freeze); counters are kept."""
        self._last_t = None
        self._last_sender_t = None
        self._last_id = None
        self._last_grid = None
        self._window.clear()

    def _trim(self, now: float) -> None:
        while self._window and self._window[0][0] < now - self._rate_window_s:
            self._window.popleft()

    def stats(self) -> VideoTimingStats:
        # tuple() copies a deque in one step under the GIL: a worker's scrape reads this while
        # the room's thread appends, and iterating the deque itself can raise then
        intervals = np.asarray([d for _, d in tuple(self._window)], dtype=np.float64)
        fps = hfps = var = None
        if intervals.size >= 2:
            span = float(np.sum(intervals))
            fps = intervals.size / span if span > 0 else None
            hfps = harmonic_fps(intervals)
            var = float(np.var(intervals))
        return VideoTimingStats(
            frames=self._frames,
            dropped=self._dropped,
            duplicated=self._duplicated,
            freezes=self._freezes,
            freeze_seconds=self._freeze_s,
            pauses=self._pauses,
            jitter_s=self._jitter,
            jitter_avg_s=self._jitter_sum / self._jitter_n if self._jitter_n else 0.0,
            fps=fps,
            harmonic_fps=hfps,
            interframe_delay_variance_s2=var,
            last_frame_time=self._last_t,
            nominal_interval_s=self.nominal_interval,
        )
