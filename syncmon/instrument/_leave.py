"""When the avatar's audio really leaves: a tap on the published audio track.

The audio source of livekit's SDK hands its buffer to WebRTC in 10 ms steps on a native timer.
From Python, the moment a sample leaves can only be estimated (push time plus the source's
``queued_duration``), and the estimate misses the timer's phase: up to 10 ms, different for
every utterance -- as much as the whole error budget of the ``timestamp`` offset. So the
instrumentor subscribes a sink to the local audio track (``rtc.AudioStream`` on it), stamps the
audio that comes out of the source with a sample clock steered by the earliest arrivals (the
monitor's own ``SampleClock``), and finds each utterance's first audio in it with the same
envelope match the monitor uses. Both ends then time the same samples the same way.

The source's timer is phase-locked for the source's lifetime, and every stretch of its output
starts on a tick: the tap also learns that phase (``timer_phase``), so that the tracker can
close it -- a subscribed stream costs the worker ~3.5 % of a core, the SDK's per-chunk work,
not syncmon's -- and model later leaves from the moment audio goes into the source.

Unlike a receiver's, the source's output stops between utterances. The envelope is therefore
kept on the tap's sample count (gaps squeezed out) and turned into sender time only when a match
is asked for, with the clock as refined by then for that stretch of audio (the clock re-anchors
on the first, possibly late, arrival after a gap and is pulled earlier by the next ones).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..analysis.audio import ANALYSIS_RATE
from ..analysis.clock import SampleClock
from ..analysis.timestamp import EnvelopeTrack
from ..marks import ENV_BLOCK_S
from ._schedule import TICK_S  # the source's timer: 10 ms per tick

log = logging.getLogger(__name__)

TAP_RATE = ANALYSIS_RATE  # what the monitor asks its audio in: the same resampler on both ends
TAP_FRAME_MS = 50
TAP_KEEP_S = 5.0
SEARCH_S = 0.1  # the estimate is late or early by a timer step and the queue's rounding
# the source's output has gaps (between utterances, or when it runs dry): audio this much later
# than the clock predicts starts a new stretch (a late delivery taken for a gap costs nothing:
# the next timely chunk pulls the stretch's clock back)
GAP_S = 0.03
PHASE_MIN_CHUNKS = 60  # chunks seen before the timer's phase is estimated
PHASE_HIT_S = 0.003
PHASE_HIT_SHARE = 0.6  # of the chunks within PHASE_HIT_S after it (random phases: 0.3)
PHASE_QUANTILE = 0.05  # of the pile, less the background: its leading edge
PILE_BEFORE_S = 0.0015  # the pile spans this much around its densest ms's centre (the rest of
PILE_AFTER_S = 0.0035  # the tick is the background)


class AudioLeaveTap:
    """Audio as it leaves one local audio track, on ``clock`` (the tracker: monotonic)."""

    def __init__(self, track: Any, clock: Callable[[], float], keep_s: float = TAP_KEEP_S) -> None:
        self._track = track
        self._clock = clock
        self.keep_s = keep_s
        self.audio = EnvelopeTrack(TAP_RATE, keep_s=keep_s)
        self._sample_clock = SampleClock(TAP_RATE, stall_s=GAP_S)
        self._n = 0  # samples seen
        # stretches of gapless audio: (sample-count time of their start, sender time of sample 0)
        self._segments: list[list[float]] = []
        self._reanchors = -1
        # per chunk: where its arrival puts its stretch's start, modulo one timer step
        self._phases: collections.deque[float] = collections.deque(maxlen=4000)
        self._listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.chunks = 0
        # the share of chunks within PHASE_HIT_S after the last phase estimate (for the log:
        # a busy host whose arrivals spread over the tick leaves the phase unknown)
        self.phase_hits: float | None = None

    def start(self) -> None:
        """Subscribe now (the sink is in place when this returns: audio captured after it is
        seen) and read in a task."""
        from livekit import rtc

        stream = rtc.AudioStream(
            self._track,
            sample_rate=TAP_RATE,
            num_channels=1,
            capacity=0,
            frame_size_ms=TAP_FRAME_MS,
        )
        self._task = asyncio.get_running_loop().create_task(
            self._run(stream), name="syncmon-audio-tap"
        )

    def on_audio(self, cb: Callable[[], None]) -> None:
        self._listeners.append(cb)

    def find(self, template: np.ndarray, expected: float) -> tuple[float, float] | bool | None:
        """Sender time at which ``template``'s audio left, near ``expected`` (see
        ``EnvelopeTrack.match``)."""
        if not self._segments:
            return None
        res = self.audio.match(template, self._tau_of(expected), SEARCH_S)
        if not isinstance(res, tuple):
            return res
        tau, corr, _ = res
        # (an utterance starts a stretch: a match a hair before its start is that start)
        t0 = next(
            (s[1] for s in reversed(self._segments) if s[0] <= tau + ENV_BLOCK_S),
            self._segments[0][1],
        )
        return tau + t0, corr

    def timer_phase(self) -> float | None:
        """The phase (sender time modulo 10 ms) of the source's timer, or None while unknown.

        A stretch of audio starts on a tick, and every chunk's arrival is late by some delay:
        the phases the arrivals imply pile up within a few tenths of a ms after the true one,
        over a background of chunks the loop delivered late by anything (a busy host: 30-40 %
        of them, spread over the whole tick). The estimate is the 5th percentile of the pile
        around its densest millisecond, less that background (a plain percentile of the
        chunks within half a tick of the pile landed in the background, ms before it);
        ``None`` unless most chunks sit within a few ms of it (no such timer, e.g. a source
        without a queue).
        """
        if len(self._phases) < PHASE_MIN_CHUNKS:
            return None
        ph = np.asarray(self._phases)
        bins = np.histogram(ph, bins=100, range=(0.0, TICK_S))[0]
        dens = np.convolve(np.concatenate([bins, bins[:10]]), np.ones(10), mode="valid")[:100]
        centre = (int(np.argmax(dens)) + 5) * TICK_S / 100  # centre of the densest 1 ms
        # unwrap around it: (centre - 5 ms, centre + 5 ms]
        un = (ph - centre + TICK_S / 2) % TICK_S - TICK_S / 2 + centre
        lo, hi = centre - PILE_BEFORE_S, centre + PILE_AFTER_S
        pile = np.sort(un[(un >= lo) & (un <= hi)])
        rate = (un.size - pile.size) / (TICK_S - (hi - lo))  # background chunks per second
        # chunks of the pile up to each one, less the background's share of the span
        excess = np.arange(1, pile.size + 1) - rate * (pile - lo)
        total = pile.size - rate * (hi - lo)
        phase = float(pile[int(np.argmax(excess >= PHASE_QUANTILE * total))])
        hits = float(np.mean((un >= phase) & (un <= phase + PHASE_HIT_S)))
        self.phase_hits = hits
        if hits < PHASE_HIT_SHARE:
            return None
        return phase % TICK_S

    def _tau_of(self, t: float) -> float:
        """The sample-count time of sender time ``t``; a time in a gap maps to the start of
        the audio after it (an utterance starts a stretch: its audio may leave later than
        estimated, by more than the search window, when the source waits for it)."""
        segs = self._segments
        for k, (tau, t0) in enumerate(segs):
            end = segs[k + 1][0] + t0 if k + 1 < len(segs) else float("inf")
            if t < tau + t0:
                return tau  # before this stretch (in the gap before it)
            if t <= end:
                return t - t0
        return t - segs[-1][1]

    def add(self, x: np.ndarray, arrival: float) -> None:
        """``x`` has just arrived from the source (at ``arrival``, on the tap's clock)."""
        start = self._sample_clock.chunk(arrival, x.size)
        tau = self._n / TAP_RATE
        t0 = start - tau
        if self._sample_clock.reanchors != self._reanchors or not self._segments:
            self._reanchors = self._sample_clock.reanchors
            self._segments.append([tau, t0])
            oldest = tau - self.keep_s
            while len(self._segments) > 1 and self._segments[1][0] <= oldest:
                self._segments.pop(0)
        else:
            self._segments[-1][1] = t0  # the clock refined: the whole stretch moves with it
        self.audio.add(x, tau)
        # this chunk's arrival, taken as on time, puts the stretch's first sample at
        seg_tau, _ = self._segments[-1]
        self._phases.append((arrival - (self._n + x.size) / TAP_RATE + seg_tau) % TICK_S)
        self._n += x.size
        self.chunks += 1
        for cb in self._listeners:
            try:
                cb()
            except Exception as e:  # a listener's failure never stops the tap
                log.debug("audio tap listener failed: %s", e)

    async def _run(self, stream: Any) -> None:
        try:
            async for ev in stream:
                arrival = self._clock()
                x = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float32) / 32768.0
                self.add(x, arrival)
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
