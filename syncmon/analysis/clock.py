"""A receiver-side clock for audio that arrives without timestamps.

Audio frames from the SDK carry no timestamp and reach Python after a variable scheduling delay,
so an arrival time is always *late* by some amount >= 0. The clock runs on the sample count and
is steered by the earliest arrivals (a min filter): an arrival earlier than the clock predicts
pulls it earlier at once; when every arrival over ``LATE_WINDOW_S`` was later than predicted by
more than ``LATE_SLACK_S``, the clock moves later by the smallest lateness seen. A stall longer
than ``STALL_S`` (the stream stopped) re-anchors it.
"""

from __future__ import annotations

LATE_WINDOW_S = 2.0
LATE_SLACK_S = 0.001
STALL_S = 0.25


class SampleClock:
    """Maps a running sample count to receiver time (seconds, monotonic)."""

    def __init__(self, sample_rate: int, stall_s: float = STALL_S) -> None:
        self.sample_rate = sample_rate
        self.stall_s = stall_s
        self._t0: float | None = None  # time of sample 0
        self._n = 0
        self._min_late = float("inf")
        self._window_start = 0.0
        self.reanchors = 0

    def chunk(self, arrival: float, samples: int) -> float:
        """Start time of a chunk of ``samples`` that finished arriving at ``arrival``."""
        start_arrival = arrival - samples / self.sample_rate
        if self._t0 is None:
            self._t0 = start_arrival
            self._window_start = arrival
        predicted = self._t0 + self._n / self.sample_rate
        late = start_arrival - predicted
        if late < 0:
            self._t0 += late  # earlier than possible: the clock was behind
        elif late > self.stall_s:
            self._t0 += late
            self.reanchors += 1
        else:
            self._min_late = min(self._min_late, late)
            if arrival - self._window_start >= LATE_WINDOW_S:
                if self._min_late > LATE_SLACK_S:
                    self._t0 += self._min_late
                self._min_late = float("inf")
                self._window_start = arrival
        start = self._t0 + self._n / self.sample_rate
        self._n += samples
        return start
