"""Received audio: the energy envelope the lip-sync estimator uses, and gaps inside speech.

The envelope is the RMS of consecutive 10 ms blocks of mono audio, stamped at each block's
centre.

A gap is audio missing inside speech. Where a receiver is present (the live monitor) the gaps
are what it had to make up: WebRTC's NetEq conceals every lost or late packet, and its
statistics say how often (``concealmentEvents``) and how many of the made-up samples were not
silence (``concealedSamples - silentConcealedSamples``) -- audio that should have been speech.
``add_concealment`` feeds them; from the first call on, ``gaps`` and ``gap_seconds`` are the
receiver's.

Without a receiver (a recording) they come from the signal: a run of ``GAP_MIN_S`` to
``GAP_MAX_S`` of 2.5 ms blocks below ``SILENCE_DBFS`` that starts and ends within two blocks
(5 ms) of speech louder than ``LOUD_DBFS``. That finds a cut in natural speech, whose pauses
fade out over tens of milliseconds; it cannot tell a cut from a synthetic voice's own abrupt
silences (espeak-ng leaves 40-55 ms of digital zero in every stop closure, cut as sharply as a
dropout at either edge, and an Opus round trip does not change that) -- which is why the live
count does not use it. -50 dBFS rather than digital zero: a codec (Opus, AAC) leaves low-level
noise in a dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the rate the analysis takes audio in: the monitor asks LiveKit for it, files are resampled to
# it and the agent-side tap reads the same (one resampler on both ends)
ANALYSIS_RATE = 16000

ENVELOPE_HOP_S = 0.010
GAP_BLOCK_S = 0.0025
GAP_MIN_S = 0.010
GAP_MAX_S = 0.300  # longer is a pause between phrases or utterances, however abrupt
SILENCE_DBFS = -50.0
LOUD_DBFS = -35.0
EDGE_BLOCKS = 2
# a chunk whose start is further than this from the running sample clock re-anchors it
DISCONTINUITY_S = 0.050


def dbfs_to_amplitude(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def block_rms(samples: np.ndarray, block: int) -> np.ndarray:
    """RMS of consecutive blocks of ``block`` samples (a trailing partial block is ignored)."""
    n = samples.size // block
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    x = samples[: n * block].reshape(n, block)
    # each block's sum of squares in one pass, in float64 (np.mean's wrapper and the squared
    # copy were most of the audio path's cost)
    return np.asarray(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64) / block))


@dataclass(frozen=True)
class EnvelopeChunk:
    """Envelope values produced by one call: block centre times (s) and RMS (full scale = 1)."""

    t: np.ndarray
    rms: np.ndarray


class AudioAnalyzer:
    """Streaming envelope and gap detector for mono float audio in [-1, 1]."""

    def __init__(self, *, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self._hop = int(round(ENVELOPE_HOP_S * sample_rate))
        self._gblock = max(1, int(round(GAP_BLOCK_S * sample_rate)))
        if self._hop % self._gblock:
            raise ValueError(f"sample_rate {sample_rate} does not split into 2.5 ms blocks")
        self._pending = np.zeros(0, dtype=np.float32)
        self._clock: float | None = None  # time of the first sample in _pending
        self._silent = dbfs_to_amplitude(SILENCE_DBFS)
        self._loud = dbfs_to_amplitude(LOUD_DBFS)
        self._min_run = int(round(GAP_MIN_S / GAP_BLOCK_S))
        self._max_run = int(round(GAP_MAX_S / GAP_BLOCK_S))
        # gap state, in 2.5 ms blocks
        self._since_loud = 10**9
        self._run = 0
        self._run_ok_start = False
        self._candidate = 0  # length of a finished run waiting for loud audio after it
        self._after = 0
        self.signal_gap_seconds = 0.0
        self.signal_gaps = 0
        self.receiver_gap_seconds = 0.0
        self.receiver_gaps = 0
        # "signal" until a receiver reports its concealment, then "receiver"
        self.gap_source = "signal"
        self.samples = 0

    @property
    def gaps(self) -> int:
        return self.receiver_gaps if self.gap_source == "receiver" else self.signal_gaps

    @property
    def gap_seconds(self) -> float:
        if self.gap_source == "receiver":
            return self.receiver_gap_seconds
        return self.signal_gap_seconds

    def add_concealment(self, events: int, seconds: float) -> None:
        """The receiver made up ``seconds`` of audio that was not silence since the last call
        (a stats poll), in ``events`` new stretches (0: the last one went on). Gaps are the
        receiver's from now on. One gap per call at most: NetEq splits one dropout into
        several concealment events (a 30 ms stall at the sender gave 1 or 2)."""
        if events < 0 or seconds < 0:
            raise ValueError(f"concealment must not go backwards: {events} events, {seconds} s")
        self.gap_source = "receiver"  # the signal rule stops here (its count stays readable)
        if seconds > 0:
            self.receiver_gaps += min(events, 1)
            self.receiver_gap_seconds += seconds

    @property
    def clock(self) -> float | None:
        """Time of the next sample expected."""
        if self._clock is None:
            return None
        return self._clock + self._pending.size / self.sample_rate

    def add(self, samples: np.ndarray, t_start: float | None = None) -> EnvelopeChunk:
        """Feed mono samples starting at ``t_start`` (None: where the last chunk ended).

        A jump of more than ``DISCONTINUITY_S`` drops the partial block; a smaller difference
        moves the clock without losing samples.
        """
        if samples.ndim != 1:
            raise ValueError(f"audio must be mono 1-D, got shape {samples.shape}")
        x = samples.astype(np.float32, copy=False)
        expected = self.clock
        if t_start is not None and (expected is None or abs(t_start - expected) > DISCONTINUITY_S):
            self._pending = np.zeros(0, dtype=np.float32)
            self._clock = t_start
        elif t_start is not None and expected is not None and self._clock is not None:
            self._clock += t_start - expected  # a small correction from the caller's clock
        elif self._clock is None:
            self._clock = 0.0
        self.samples += x.size
        buf = np.concatenate([self._pending, x]) if self._pending.size else x
        n = (buf.size // self._hop) * self._hop
        done, self._pending = buf[:n], buf[n:].copy()
        assert self._clock is not None
        t0 = self._clock
        self._clock = t0 + n / self.sample_rate
        if n == 0:
            return EnvelopeChunk(np.zeros(0), np.zeros(0))
        if self.gap_source == "signal":  # (a per-block loop: not run once the receiver counts)
            self._gaps(block_rms(done, self._gblock))
        rms = block_rms(done, self._hop)
        t = t0 + (np.arange(rms.size) + 0.5) * ENVELOPE_HOP_S
        return EnvelopeChunk(t, rms)

    def _gaps(self, blocks: np.ndarray) -> None:
        for v in blocks:
            if self._candidate:
                self._after += 1
                if v >= self._loud:
                    self._count(self._candidate)
                elif self._after > EDGE_BLOCKS or v < self._silent:
                    self._candidate = 0
            if v < self._silent:
                if self._run == 0:
                    self._run_ok_start = self._since_loud <= EDGE_BLOCKS
                self._run += 1
            else:
                if self._min_run <= self._run <= self._max_run and self._run_ok_start:
                    if v >= self._loud:
                        self._count(self._run)
                    else:
                        self._candidate, self._after = self._run, 1
                self._run = 0
            self._since_loud = 0 if v >= self._loud else self._since_loud + 1

    def _count(self, run: int) -> None:
        self.signal_gaps += 1
        self.signal_gap_seconds += run * GAP_BLOCK_S
        self._candidate = 0
