"""The ``timestamp`` lip-sync offset: sender times from an instrumented avatar (``syncmon.marks``).

For an utterance whose first audio sample left the sender at ``S_a`` and whose picture of that
instant left at ``S_a + skew`` (both on the sender's clock):

    offset = transit_v - transit_a + skew
    transit_v = R_v - S_v   (median over the frames around the utterance's first frame)
    transit_a = R_a - S_a   (R_a: where the mark's envelope matches the received audio)

R are receiver (monitor) times, S sender times: any offset between the two clocks is in both
transits and cancels. The median makes ``transit_v`` robust to single late frames; the envelope
match is a normalized cross-correlation on 2.5 ms blocks with parabolic peak interpolation.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..marks import ENV_BLOCK_S, TimingMark, envelope
from .audio import ANALYSIS_RATE

SEARCH_S = 0.5  # audio may arrive this much before or after video's transit predicts
KEEP_S = 10.0  # received envelope kept; a mark older than this is given up
MIN_CORR = 0.7
FRAME_SPAN = 25  # frames either side of the utterance's first frame for the median transit
MAX_TRANSITS = 600
# marks waiting for their audio and frames: an utterance's mark matches within a second or two,
# so a few are plenty; the cap and the age bound keep a flood's memory and cost constant
MAX_PENDING = 8
SMOOTH_BLOCKS = 4
# a second place matching within this of the best, further than RIVAL_S from it, makes the
# match ambiguous (a template from the middle of speech whose syllables repeat; a flat one)
RIVAL_MARGIN = 0.02
RIVAL_S = 0.03
SPLIT_SEARCH_S = 0.02  # each half of a matched template is placed within this of the whole
SPLIT_MAX_S = 0.0025  # halves further apart: the audio was not continuous, no estimate


@dataclass(frozen=True)
class TimestampEstimate:
    t: float  # receiver time of the utterance start
    offset_s: float
    correlation: float
    transit_v_s: float
    transit_a_s: float
    skew_s: float
    split_s: float = 0.0  # ``Match.split_s`` of the audio match
    seq: int = 0  # the mark's utterance number at the sender
    skew_exact: bool = True  # False: ``skew_s`` is an upper bound (the mark's ``exact``)


def _smooth(env: np.ndarray) -> np.ndarray:
    k = np.ones(SMOOTH_BLOCKS) / SMOOTH_BLOCKS
    return np.asarray(np.sqrt(np.convolve(env * env, k, mode="same")))


class EnvelopeTrack:
    """The RMS envelope (2.5 ms blocks) of a stream of timestamped audio, kept for ``keep_s``,
    and where a template envelope matches it.

    The monitor finds a timing mark's utterance in the audio it received with it; the
    instrumented sender finds the same utterance in the audio that left its audio source. Both
    sides match the same way, so whatever the match itself adds (smoothing, block phase)
    cancels in the difference.
    """

    def __init__(self, sample_rate: int, keep_s: float = KEEP_S) -> None:
        self.sample_rate = sample_rate
        self.keep_s = keep_s
        self._block = int(round(ENV_BLOCK_S * sample_rate))
        self._t: collections.deque[np.ndarray] = collections.deque()
        self._v: collections.deque[np.ndarray] = collections.deque()
        self._carry = np.zeros(0, dtype=np.float32)
        self._carry_t = 0.0

    def clear(self) -> None:
        self._t.clear()
        self._v.clear()
        self._carry = np.zeros(0, dtype=np.float32)

    @property
    def latest(self) -> float | None:
        """Time of the newest envelope block."""
        return float(self._t[-1][-1]) if self._t else None

    def add(self, samples: np.ndarray, t_start: float) -> None:
        """Mono audio whose first sample is at ``t_start``."""
        if (
            self._carry.size
            and abs(self._carry_t + self._carry.size / self.sample_rate - t_start) < 0.01
        ):
            x = np.concatenate([self._carry, samples])
            t0 = self._carry_t
        else:
            x, t0 = samples, t_start
        env = envelope(x, self.sample_rate)
        used = env.size * self._block
        self._carry, self._carry_t = x[used:], t0 + used / self.sample_rate
        if env.size:
            self._t.append(t0 + np.arange(env.size) * self._block / self.sample_rate)
            self._v.append(env)
        while self._t and self._t[-1][-1] - self._t[0][-1] > self.keep_s:
            self._t.popleft()
            self._v.popleft()

    def match(self, template: np.ndarray, expected: float, search_s: float) -> Match | bool | None:
        """Where ``template`` starts, searched within ``expected +- search_s``.

        A ``Match``; ``None`` while the audio there has not all arrived; ``False``
        if it never will match (gone, a hole in the audio, or no correlation above
        ``MIN_CORR``).
        """
        latest = self.latest
        if latest is None:
            return None
        span = template.size * ENV_BLOCK_S
        if latest < expected + search_s + span:
            if latest - expected > self.keep_s:
                return False
            return None
        t = np.concatenate(list(self._t))
        v = np.concatenate(list(self._v))
        lo = int(np.searchsorted(t, expected - search_s))
        hi = int(np.searchsorted(t, expected + search_s + span))
        seg_t, seg = t[lo:hi], v[lo:hi]
        if seg.size < template.size + 3 or np.any(np.diff(seg_t) > 2 * ENV_BLOCK_S):
            return False  # the audio has a hole there
        # a 10 ms moving RMS on both sides: the 2.5 ms blocks alone ripple with the pitch
        tmpl, seg = _smooth(np.asarray(template, dtype=np.float64)), _smooth(seg)
        corr = _ncc(seg, tmpl)
        pos, peak = _peak(corr)
        if peak < MIN_CORR or _rival(corr, pos) > peak - RIVAL_MARGIN:
            return False  # no match, or not one place: audio that repeats itself
        return Match(
            float(np.interp(pos, np.arange(seg_t.size), seg_t)), peak, _split(seg, tmpl, pos)
        )


class Match(NamedTuple):
    t: float  # where the template starts
    corr: float
    # how much later the template's second half sits than its first: 0 for audio that played
    # out as it was sent; a gap or a stretch inside it (an underrun at the sender, concealment
    # at the receiver) shows as some ms, and the match itself then lies between the two
    split_s: float


def _ncc(seg: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Normalized cross-correlation of ``part`` at every position in ``seg``."""
    win = sliding_window_view(seg, part.size)
    a = part - part.mean()
    w = win - win.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum() * (w * w).sum(axis=1)) + 1e-12
    # einsum, not a BLAS product: this also runs inside the avatar worker (the sender's tap),
    # where waking the BLAS thread pool would cost the application's cores
    return np.asarray(np.einsum("ij,j->i", w, a) / denom)


def _peak(corr: np.ndarray) -> tuple[float, float]:
    """Position (fractional, by parabolic interpolation) and value of the highest peak."""
    k = int(np.argmax(corr))
    frac = 0.0
    if 0 < k < corr.size - 1:
        y0, y1, y2 = corr[k - 1], corr[k], corr[k + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:
            frac = float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
    return k + frac, float(corr[k])


def _rival(corr: np.ndarray, pos: float) -> float:
    """The highest other peak (a local maximum) more than ``RIVAL_S`` away from ``pos``."""
    if corr.size < 3:
        return -1.0
    inner = corr[1:-1]
    peaks = np.flatnonzero((inner >= corr[:-2]) & (inner >= corr[2:])) + 1
    far = peaks[np.abs(peaks - pos) > RIVAL_S / ENV_BLOCK_S]
    return float(corr[far].max()) if far.size else -1.0


def _split(seg: np.ndarray, tmpl: np.ndarray, pos: float) -> float:
    """Seconds the template's second half matches later than its first, each searched within
    ``SPLIT_SEARCH_S`` of where the whole matched (0 when a half is too flat to place)."""
    half = tmpl.size // 2
    reach = int(round(SPLIT_SEARCH_S / ENV_BLOCK_S))
    k = int(round(pos))
    offsets = []
    # (the template's last blocks are smoothed against the zeros past its end, not the audio
    # that followed: left out of the second half)
    for part, base in ((tmpl[:half], k), (tmpl[half : tmpl.size - SMOOTH_BLOCKS], k + half)):
        if part.std() < 1e-3 * (tmpl.std() + 1e-12):
            return 0.0
        lo = max(0, base - reach)
        sub = seg[lo : base + reach + part.size]
        if sub.size < part.size + 2:
            return 0.0
        p, _ = _peak(_ncc(sub, part))
        offsets.append(lo + p - base)
    return (offsets[1] - offsets[0]) * ENV_BLOCK_S


@dataclass
class _Pending:
    mark: TimingMark
    added: float | None  # the received audio's time when the mark came (None: no audio yet)


class TimestampOffsetEstimator:
    """Matches timing marks to received audio and frame metadata to received video."""

    def __init__(self, sample_rate: int = ANALYSIS_RATE) -> None:
        self.sample_rate = sample_rate
        self.audio = EnvelopeTrack(sample_rate)
        self._transits: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=MAX_TRANSITS
        )
        # each mark with the received-audio time when it came (None: no audio yet)
        self._pending: collections.deque[_Pending] = collections.deque()
        self.matched = 0
        self.unmatched = 0
        self.expired = 0  # given up: too old, or pushed out by newer marks

    def clear(self) -> None:
        """A discontinuity: forget received audio and frames (pending marks stay)."""
        self._transits.clear()
        self.audio.clear()

    def add_video(self, t: float, frame_id: int | None, sender_time: float | None) -> None:
        if frame_id is not None and sender_time is not None:
            self._transits.append((frame_id, t - sender_time))

    def add_audio(self, samples: np.ndarray, t_start: float) -> list[TimestampEstimate]:
        """Received mono audio whose first sample arrived at ``t_start``."""
        self.audio.add(samples, t_start)
        return self._try_pending()

    def add_mark(self, mark: TimingMark) -> list[TimestampEstimate]:
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.expired += 1
        self._pending.append(_Pending(mark, self.audio.latest))
        return self._try_pending()

    def _try_pending(self) -> list[TimestampEstimate]:
        out: list[TimestampEstimate] = []
        now = self.audio.latest
        for _ in range(len(self._pending)):
            entry = self._pending.popleft()
            if entry.added is None:
                entry.added = now
            if now is not None and entry.added is not None and now - entry.added > KEEP_S:
                self.expired += 1
                continue
            res = self._match(entry.mark)
            if res is None:
                self._pending.append(entry)
            elif isinstance(res, TimestampEstimate):
                out.append(res)
                self.matched += 1
            else:
                self.unmatched += 1
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _transit_v(self, frame_id: int) -> float | None:
        near = [tr for fid, tr in self._transits if abs(fid - frame_id) <= FRAME_SPAN]
        if len(near) < 3:
            return None
        return float(np.median(near))

    def _match(self, m: TimingMark) -> TimestampEstimate | bool | None:
        """An estimate; ``None`` to wait for more data; ``False`` if it will never match."""
        if self.audio.latest is None:
            return None
        transit_v = self._transit_v(m.frame_id)
        if transit_v is None:
            newest = max((fid for fid, _ in self._transits), default=None)
            if newest is not None and newest > m.frame_id + 4 * FRAME_SPAN:
                return False  # its frames are gone
            return None
        s_a = m.t_audio_us / 1e6
        res = self.audio.match(np.asarray(m.env), s_a + transit_v, SEARCH_S)
        if not isinstance(res, tuple):
            return res
        r_a, peak, split = res
        transit_a = r_a - s_a
        skew = m.skew_us / 1e6
        return TimestampEstimate(
            t=r_a,
            offset_s=transit_v - transit_a + skew,
            correlation=peak,
            transit_v_s=transit_v,
            transit_a_s=transit_a,
            skew_s=skew,
            split_s=split,
            seq=m.seq,
            skew_exact=m.exact,
        )
