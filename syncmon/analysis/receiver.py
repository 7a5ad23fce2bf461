"""The monitor's own A/V delay difference, from its WebRTC inbound-rtp stats.

A subscriber delays each stream by its own amount before syncmon sees it: video by its frame
jitter buffer, audio by NetEq. That difference (video minus audio, the *receiver bias*) is the
monitor's, not the avatar's: it comes off every content and timestamp estimate. What the stats
give, measured through the real livekit-server:

- **video**: ``jitterBufferDelay / jitterBufferEmittedCount`` over a window, steady to +-1 ms.
- **audio**: NetEq's ``jitterBufferDelay`` counts a packet's wait in whole 10 ms ticks of the
  playout pull, so its average is off by a constant that depends on where the packets land
  between two pulls (two monitors receiving the same audio at the same instant read 32 and
  39 ms); and when NetEq conceals or time-stretches, everything it plays after moves by exactly
  the samples it inserted or removed, which that average follows late and in part (7 ms of
  concealment moved one monitor's audio by 6.6 ms and its delay average by 0).

So the audio's delay is *anchored* once, on its windowed average while nothing was stretched,
and then moved sample-exact by NetEq's counters (inserted + concealed - removed), less what
NetEq stretches to follow a sender whose clock runs at another rate than the monitor's (that
rate is the slope of the video transit, which no jitter buffer stretches). A timestamp estimate
takes the bias at its own instant: the stats polls either side of it must show the same
stretch, else the audio moved right then and the estimate is withheld.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from .drift import theil_sen_slope

WINDOW_S = 8.0  # jitter-buffer delays are averaged over the frames emitted in this window
MIN_SPAN_S = 6.0  # no average (and so no bias) from less than this
STEADY_S = 0.002  # a video buffer whose last poll is this close to its window's is steady
FLAT_S = 0.0005  # stretch counters that moved less than this did not move the audio
KEEP_S = 30.0  # polls kept to place an estimate between two of them
# the clock rate: the slope of the video transit (less the video jitter buffer) over at least
# RATE_MIN_SPAN_S. The video path's own delay wanders by a few ms over a minute (its timing
# module adapting), so a slope is taken only from a long span and only when it is beyond what
# that wander makes of it: on one host, or hosts whose clocks NTP disciplines (< 1-2 ppm), the
# rate stays 0 and the audio delay is exact; on free-running clocks (10-100 ppm) it is followed
RATE_MIN_SPAN_S = 300.0
RATE_KEEP_S = 1200.0
RATE_MIN = 10e-6
RATE_MAX = 500e-6  # a slope steeper than this is not a clock rate (a sender restarted)
MAX_TRANSITS = 400


@dataclass(frozen=True)
class _Poll:
    t: float
    stretch_s: float | None  # net seconds NetEq stretched the audio by so far
    video_s: float | None  # windowed video jitter-buffer delay
    video_steady: bool
    audio_s: float | None = None  # windowed audio jitter-buffer delay (the stat, as it reads)


class _Window:
    """Average of a cumulative (delay, emitted count) pair over the last ``WINDOW_S``."""

    def __init__(self) -> None:
        self.hist: collections.deque[tuple[float, float, int]] = collections.deque()

    def add(self, t: float, delay: float, emitted: int) -> float | None:
        if self.hist and emitted < self.hist[-1][2]:
            self.hist.clear()  # the counters restarted (a new receive stream)
        self.hist.append((t, delay, emitted))
        while len(self.hist) > 2 and t - self.hist[1][0] >= WINDOW_S:
            self.hist.popleft()
        t0, d0, n0 = self.hist[0]
        if emitted <= n0 or t - t0 < MIN_SPAN_S:
            return None
        return (delay - d0) / (emitted - n0)

    def last(self) -> float | None:
        """The average over the last poll alone."""
        if len(self.hist) < 2 or self.hist[-1][2] <= self.hist[-2][2]:
            return None
        (_, d0, n0), (_, d1, n1) = self.hist[-2], self.hist[-1]
        return (d1 - d0) / (n1 - n0)


class ReceiverDelay:
    """The receiver bias over time, from stats polls (monotonic seconds throughout)."""

    def __init__(self) -> None:
        self._video = _Window()
        self._audio = _Window()
        self._stretch: collections.deque[tuple[float, float]] = collections.deque()
        # (audio delay, stretch, time) when the delay was anchored:
        # delay(t) = delay_A + stretch(t) - stretch_A - rate * (t - t_A)
        self._anchor: tuple[float, float, float] | None = None
        self._polls: collections.deque[_Poll] = collections.deque()
        self._transits: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=MAX_TRANSITS
        )
        self.rate = 0.0  # sender clock rate against the monitor's, minus 1

    def reset(self, kind: str) -> None:
        """``kind``'s receive stream is new: what was learnt of the old one is void."""
        if kind == "video":
            self._video = _Window()
        else:
            self._audio = _Window()
            self._stretch.clear()
            self._anchor = None
            self._transits.clear()
            self.rate = 0.0
        self._polls.clear()

    def poll(
        self,
        t: float,
        *,
        video: tuple[float, int] | None,
        audio: tuple[float, int] | None,
        stretch_s: float | None,
    ) -> None:
        """One stats poll: cumulative (jitterBufferDelay s, emitted count) per stream, and
        NetEq's net stretch in seconds ((inserted + concealed - removed) / rate)."""
        video_s = self._video.add(t, *video) if video is not None else None
        last_v = self._video.last()
        audio_s = self._audio.add(t, *audio) if audio is not None else None
        if stretch_s is not None:
            if self._stretch and stretch_s < self._stretch[-1][1] - 1.0:
                self.reset("audio")  # counters restarted
            self._stretch.append((t, stretch_s))
            while len(self._stretch) > 2 and t - self._stretch[1][0] >= WINDOW_S:
                self._stretch.popleft()
            if self._anchor is None and audio_s is not None and self._flat():
                self._anchor = (audio_s, stretch_s, t)
        self._polls.append(
            _Poll(
                t,
                stretch_s,
                video_s,
                video_s is not None and last_v is not None and abs(last_v - video_s) <= STEADY_S,
                audio_s,
            )
        )
        while self._polls and t - self._polls[0].t > KEEP_S:
            self._polls.popleft()

    def _flat(self) -> bool:
        nets = [n for _, n in self._stretch]
        return bool(nets) and max(nets) - min(nets) <= FLAT_S

    def _audio_delay(self, t: float, stretch_s: float | None) -> float | None:
        if self._anchor is None or stretch_s is None:
            return None
        delay_a, stretch_a, t_a = self._anchor
        return delay_a + stretch_s - stretch_a - self.rate * (t - t_a)

    def _bias(self, t: float, p: _Poll) -> float | None:
        audio = self._audio_delay(t, p.stretch_s)
        return None if audio is None or p.video_s is None else p.video_s - audio

    @property
    def bias_s(self) -> float | None:
        """The bias now (the last poll's); None till both delays are known. Before the audio
        delay is anchored, the two windowed averages as they read (a few ms off at most: good
        for the content offset, not for timestamp estimates, which wait for the anchor)."""
        if not self._polls:
            return None
        p = self._polls[-1]
        b = self._bias(p.t, p)
        if b is None and p.video_s is not None and p.audio_s is not None:
            return p.video_s - p.audio_s
        return b

    @property
    def window_bias_s(self) -> float | None:
        """The bias averaged over the last ``WINDOW_S`` of polls, for estimates that average
        over such a window themselves (the content offset): a step in the audio delay enters
        them as gradually as it enters their window."""
        if not self._polls:
            return None
        end = self._polls[-1].t
        vals = [
            b for p in self._polls if p.t > end - WINDOW_S and (b := self._bias(p.t, p)) is not None
        ]
        return float(np.mean(vals)) if vals else self.bias_s

    @property
    def audio_delay_s(self) -> float | None:
        p = self._polls[-1] if self._polls else None
        return None if p is None else self._audio_delay(p.t, p.stretch_s)

    def bias_at(self, t: float) -> float | str | None:
        """The bias at receiver time ``t``; None to wait for the next poll; else why not."""
        if not self._polls or t > self._polls[-1].t:
            return None
        before = [p for p in self._polls if p.t <= t]
        if not before:
            return "too old for the stats kept"
        p1 = before[-1]
        p2 = next(p for p in self._polls if p.t >= t)
        b = self._bias(t, p2)
        if b is None or p1.stretch_s is None:
            return "the receiver's jitter buffers not measured yet"
        assert p2.stretch_s is not None
        if abs(p2.stretch_s - p1.stretch_s) > FLAT_S:
            return f"NetEq stretched the audio by {(p2.stretch_s - p1.stretch_s) * 1e3:.1f} ms then"
        if not p2.video_steady:
            return "the video jitter buffer re-adapting"
        return b

    def add_transit(self, t: float, transit_v_s: float) -> None:
        """A video transit (receiver minus sender time) at ``t``: its slope is the clock rate."""
        video_s = next((p.video_s for p in reversed(self._polls) if p.video_s is not None), None)
        if video_s is None:
            return
        while self._transits and t - self._transits[0][0] > RATE_KEEP_S:
            self._transits.popleft()
        # (less the video jitter buffer: what is left is the frames' arrival)
        self._transits.append((t, transit_v_s - video_s))
        ts = np.array([x[0] for x in self._transits])
        if ts[-1] - ts[0] < RATE_MIN_SPAN_S:
            return
        slope = theil_sen_slope([x[1] for x in self._transits], ts)
        self.rate = slope if RATE_MIN <= abs(slope) <= RATE_MAX else 0.0
