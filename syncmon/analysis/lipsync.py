"""Content lip-sync: the offset between the received voice and the received mouth.

Method (``method="content"`` in shared/DESIGN.md):

1. Each video frame is reduced to the mean luma of a small grid of cells (``luma_grid``). The
   cells over the mouth brighten or darken as it opens; mean luma over a cell averages away codec
   noise that swamps plain frame differences.
2. The received audio becomes an RMS envelope (``analysis.audio``), smoothed a little.
3. Over a window of frames, the envelope is sampled at each frame's time minus a candidate lag
   ``tau`` (every 5 ms in ±500 ms); audio rows and cell series pass the same zero-phase high-pass
   (a Gaussian local mean is removed) so head sway and lighting drift drop out without moving the
   peak; each cell's Pearson correlation against every lag is computed in one matrix product.
4. The cells that follow the speech are the ones with the strongest correlation peak; their
   signed, weighted sum is the mouth signal, whose correlation curve's peak, refined by a
   parabola through its neighbours, is the offset. Because the envelope is interpolated at the
   frame times, the resolution is the lag step, not the frame interval.
5. Where the face is found (``face.py``), the registered face's mouth cells judge the window
   too (``_face_judge``): registration took the head out of them, so on a busy face nodding
   with the speech they follow the mouth where the grid's cells follow the head as much. The
   surer of the two is published, the face's only where it shows the mouth moving.
6. Confidence compares the peak with the peaks of the same mouth signal against the audio
   shifted circularly by 1-7 s (null correlations), and is zero when the window holds too little
   speech or the picture does not move. No estimate is returned below ``min_confidence``.

Sign: ``offset = t_video - t_audio``; positive when the picture is late.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from .face import (
    AWAY_CELLS,
    FACE_GRID,
    JUDGE_RANK,
    MOTION_SPAN_S,
    MOUTH_CELLS,
    MOVING_LEVEL,
    FaceFrame,
    leading_time_courses,
    mouth_change,
    mouth_motion,
    random_probe,
    without_pose,
)
from .filters import Highpass, gaussian_filter_nearest
from .lipstill import STILL_SPAN_S, LipStill, StillAccount
from .moving import (
    MOVING_CONTEXT_S,
    MOVING_HEAD_COURSES,
    MOVING_KEEP_S,
    MOVING_LAGS,
    MOVING_TRIES,
    moving_onset,
    stretches,
)

log = logging.getLogger(__name__)

DEFAULT_GRID = (16, 16)
# A cell's mean is taken over this many rows of it, evenly spaced, and every column: the rows
# are what costs (a decoded plane is read from memory a cache line at a time, so skipping
# columns saves nothing), and a cell still averages hundreds of pixels (240 at 360p, 480 at 720p)
GRID_ROWS_PER_CELL = 6
SPEECH_DBFS = -50.0
SPEECH_RELATIVE = 0.1


@functools.lru_cache(maxsize=16)
def _grid_layout(
    height: int, width: int, grid: tuple[int, int]
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """The rows read (GRID_ROWS_PER_CELL evenly inside each cell row), how many per cell, the
    first column of each cell, and each cell's pixel count."""
    gh, gw = grid
    k = min(GRID_ROWS_PER_CELL, height // gh)
    # cell i's pixel rows are those r with r * gh // height == i (and its columns alike)
    top = (np.arange(gh + 1) * height + gh - 1) // gh
    tall = np.diff(top)
    rows = top[:-1, None] + (2 * np.arange(k)[None, :] + 1) * tall[:, None] // (2 * k)
    first = (np.arange(gw) * width + gw - 1) // gw
    count = np.diff(np.append(first, width)) * k
    return rows.ravel(), k, first, count.astype(np.float64)


def luma_grid(luma: np.ndarray, grid: tuple[int, int] = DEFAULT_GRID) -> np.ndarray:
    """Mean luma of each cell of a ``grid`` (rows, cols) laid over an 8-bit luma plane (over
    GRID_ROWS_PER_CELL rows of each cell, evenly spaced, and all its columns)."""
    if luma.ndim != 2:
        raise ValueError(f"luma plane must be 2-D, got shape {luma.shape}")
    gh, gw = grid
    h, w = luma.shape
    if h < gh or w < gw:
        raise ValueError(f"frame {w}x{h} is too small for grid {grid}")
    rows, k, first, count = _grid_layout(h, w, (gh, gw))
    # a cell row's k rows summed in 16 bits (k * 255 fits; numpy's 32-bit sum over the middle
    # axis cost twice as much), then each cell's columns in 32
    by_row = np.add.reduce(luma[rows].reshape(gh, k, w), axis=1, dtype=np.uint16)
    return np.asarray(
        np.add.reduceat(by_row, first, axis=1, dtype=np.uint32) / count, dtype=np.float32
    )


@dataclass(frozen=True)
class LipSyncConfig:
    """Tuning of the content estimator; the defaults are what the tests hold to."""

    window_s: float = 8.0
    # an estimate every hop_s once the mouth is located; until then every locate_hop_s at
    # most, so that a stream's first estimate (and its start-up stage ``moving``) comes as
    # soon as a confident window allows whatever the steady cadence
    hop_s: float = 1.0
    locate_hop_s: float = 1.0
    max_lag_s: float = 0.5
    lag_step_s: float = 0.005
    top_cells: int = 6
    highpass_sigma_s: float = 0.08
    envelope_sigma_s: float = 0.015
    min_confidence: float = 0.3
    min_speech_fraction: float = 0.25
    calibration_s: float = 0.0
    candidates: int = 3  # candidate mouth regions tried per window, per way of ranking cells
    # the whole candidate search every this many estimates (and whenever the last mouth's
    # region alone does not hold its lag: _region_holds); in between, that region only
    full_search_every: int = 4
    exclusion: int = 1  # cells (Chebyshev) around a candidate kept out of its nuisance basis
    nuisance_rank: int = 12  # common time courses taken out to rank the cells (and half as many)
    region_rank: int = 45  # time courses of the cells away from a candidate taken out of it
    # a less than clear estimate is published once the window before (within 3 hops) agrees
    # with it: a lone window that locked onto something else (a syllable off, what is left of
    # a nodding head) pages no one
    agree_s: float = 0.020
    confirm_confidence: float = 0.6  # a window this confident needs no confirmation
    # a second peak of the correlation curve this close to the first lowers the confidence
    rival_ratio: float = 0.85
    # lip-still: the mouth's own motion below this share of its speaking level, during speech,
    # for longer than still_min_s; pauses in the speech up to still_bridge_s do not end it
    still_ratio: float = 0.15
    still_min_s: float = 1.0
    still_bridge_s: float = 0.6

    def __post_init__(self) -> None:
        if self.window_s < 2.0:
            raise ValueError(f"window_s must be at least 2 s, got {self.window_s}")
        if not 0.0 < self.max_lag_s < self.window_s / 2:
            raise ValueError(f"max_lag_s must be in (0, window_s/2), got {self.max_lag_s}")
        if self.lag_step_s <= 0:
            raise ValueError(f"lag_step_s must be positive, got {self.lag_step_s}")
        for name in ("hop_s", "locate_hop_s"):
            if not 0.0 < getattr(self, name) <= self.window_s / 2:
                raise ValueError(f"{name} must be in (0, window_s/2], got {getattr(self, name)}")


@dataclass(frozen=True)
class LipSyncEstimate:
    """One windowed estimate; ``offset_s`` is None when confidence is too low."""

    t: float
    offset_s: float | None
    confidence: float
    peak_correlation: float
    speech_fraction: float


def _normalize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x - x.mean(axis=-1, keepdims=True)
    # (np.linalg.norm's sum of squares, without its copy of a real array's conjugate)
    norm = np.sqrt(np.add.reduce(x * x, axis=-1, keepdims=True))
    ok = norm[..., 0] > 1e-9
    if ok.all():  # (the usual case: a plain division, not a masked one)
        x /= norm
        return x, ok
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-9), ok


class FaceMotion(NamedTuple):
    """A window's frames that show the face (``t``), and at each: the mouth's own motion
    (``face.mouth_motion``), its change from the frame before (``face.mouth_change``) and the
    head's speed (its registered pose's change from the frame before, pixels of the
    registration's square)."""

    t: np.ndarray
    motion: np.ndarray
    change: np.ndarray
    head: np.ndarray


class _Picture(NamedTuple):
    """A window's cells that vary (``idx``; their normalized time courses ``vv``, their row
    and column ``cell_rc``), the nuisance rank, and what every mouth search in the window
    shares (``ContentOffsetEstimator._picture``)."""

    idx: np.ndarray
    vv: np.ndarray
    cell_rc: np.ndarray
    rank: int
    gram: np.ndarray
    sub: np.ndarray
    g_sub: np.ndarray
    # the window's searches share these too: a region-only search that does not hold is
    # followed by a full one (the nuisance bases by the zone's rows; the plain ranking)
    bases: dict[bytes, np.ndarray]
    plain: dict[str, np.ndarray]

    def basis(self, zone: np.ndarray) -> np.ndarray:
        """``_downdated_basis`` of the cells outside ``zone`` (rows of ``vv``)."""
        key = zone.tobytes()
        q = self.bases.get(key)
        if q is None:
            q = self.bases[key] = _downdated_basis(
                self.gram, self.sub, self.g_sub, self.vv[zone], self.rank
            )
        return q


@dataclass(frozen=True)
class _Mouth:
    signal: np.ndarray  # normalized, one value per frame of the window
    cells: np.ndarray  # grid cell indices
    weights: np.ndarray
    score: float
    q: np.ndarray  # the nuisance basis its cells were cleaned with
    seed: int  # the grid cell its region was centred on


@dataclass
class _MouthModel:
    """Where the mouth was in the last confident window, and how much it moves speaking."""

    cells: np.ndarray
    weights: np.ndarray
    lag: float
    seed: int  # the grid cell the region that found it was centred on

    def zone(self, shape: tuple[int, int]) -> np.ndarray:
        """The mouth's cells and their neighbours (grid indices)."""
        rows, cols = shape
        r, c = self.cells // cols, self.cells % cols
        out = {
            (int(rr + dr)) * cols + int(cc + dc)
            for rr, cc in zip(r, c, strict=True)
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
            if 0 <= rr + dr < rows and 0 <= cc + dc < cols
        }
        return np.asarray(sorted(out), dtype=np.int64)

    def signal(self, hpg: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The mouth's own motion per frame: its cells, high-passed, cleaned of the picture's
        common time courses ``q``, combined with its weights."""
        x = hpg[:, self.cells].T
        x = x - (x @ q) @ q.T
        w = self.weights / max(1e-9, float(np.sum(np.abs(self.weights))))
        return np.asarray(w @ x)


FACE_CELLS = FACE_GRID * FACE_GRID
# an episode's edges extend over the speaking frames whose correlation stays below this
# (lipstill.StillAccount._lead_in)
STILL_EDGE_CORR = 0.5
# speech, for the lip-still account on the face: the estimator's own speech level, widened by
# 60 ms (a stop's closure, a vowel's decay)
STILL_SPEECH_WIDEN_S = 0.06
# a pause, for the pose's fit (face.without_pose): no speech this near (the mouth closes after
# the voice stops and opens before it starts: its time constant, its anticipation)
PAUSE_MARGIN_S = 0.15
FACE_STILL = 0.35  # of the mouth's usual speaking motion: see _face_frozen and _face_still
FACE_MIN_S = 3.0  # of one face box in a window before its frames are judged on the face


def _speaking(
    t: np.ndarray,
    at: np.ndarray,
    env: np.ndarray,
    level: float,
    widen: float = STILL_SPEECH_WIDEN_S,
) -> np.ndarray:
    """Whether the voice speaks at each of the times ``t``: its envelope (``at``, ``env``) above
    ``level``, widened by ``widen`` seconds either side (the closure of a stop, the decay of
    a vowel are still speech)."""
    hop = float(np.median(np.diff(at))) if at.size > 1 else 0.01
    k = 2 * int(round(widen / hop)) + 1
    active = np.convolve((env > level).astype(float), np.ones(k), mode="same") > 0
    i = np.clip(np.searchsorted(at, t), 0, at.size - 1)
    # no voice is known before the audio begins or after it ends
    return np.asarray(active[i] & (t >= at[0]) & (t <= at[-1]))


def _pauses(t: np.ndarray, at: np.ndarray, env: np.ndarray, level: float) -> np.ndarray:
    """Whether each of the times ``t`` lies in a pause of the voice: no speech (``_speaking``)
    within PAUSE_MARGIN_S either side, and the audio known there. There every mouth is still,
    a frozen one and one that moves with the voice alike (see ``face.without_pose``)."""
    quiet = ~_speaking(t, at, env, level, PAUSE_MARGIN_S)
    return np.asarray(quiet & (t >= at[0]) & (t <= at[-1]))


def _without_blips(
    t: np.ndarray, motion: np.ndarray, still: np.ndarray, level: float
) -> np.ndarray:
    """``still`` (the motion below ``level``) with the runs of moving frames that are not a
    mouth moving taken as still: those shorter than MOTION_SPAN_S that never reach twice
    MOVING_LEVEL (the picture's noise), and those shorter than half of it that never reach
    twice ``level`` (a frame or two of what a frozen mouth keeps of the head).

    The motion is a mean over MOTION_SPAN_S: a mouth that moves at all moves it over at least
    that long, and a speaking one far above the fixed level (40-330 luma levels squared at its
    5th percentile on the lip-still bench, against 10). What crosses it for less, and faintly,
    is the picture's own noise: a mouth frozen from the start at 720p VP8 150 kbps read 10-15
    for 3-7 frames now and then and its 16.5 speaking seconds counted 15.2, in three episodes
    (now 16.5 in one); a 360p VP8 freeze with 1.13 s of speech counted nothing (now 1.23). A
    stretch of such noise longer than the span still ends a run (another encoding of the
    same 720p clip: 0.3 s at 10-14). Against a level set by the window's speaking motion, a
    frozen mouth on a nodding head crosses it for a frame now and then, which would split a
    freeze; a crossing of half the span or more is a syllable spoken softly, and taking it
    for noise reads a speaking mouth as still."""
    out = still.copy()
    moving = np.flatnonzero(~still)
    if moving.size == 0:
        return out
    # runs of consecutive moving frames
    breaks = np.flatnonzero(np.diff(moving) > 1)
    for run in np.split(moving, breaks + 1):
        lo, hi = int(run[0]), int(run[-1])
        # a run at either end of the window may go on beyond it
        if lo == 0 or hi == t.size - 1:
            continue
        span, peak = t[hi + 1] - t[lo - 1], float(motion[run].max())
        if (span < MOTION_SPAN_S and peak < 2 * MOVING_LEVEL) or (
            span < MOTION_SPAN_S / 2 and peak < 2 * level
        ):
            out[run] = True
    return out


def speech_level(wenv: np.ndarray) -> float:
    """The envelope level above which a window speaks: SPEECH_RELATIVE of its loud speech (the
    95th percentile of ``wenv``, the window's raw envelope), at least SPEECH_DBFS."""
    return max(10 ** (SPEECH_DBFS / 20), SPEECH_RELATIVE * float(np.percentile(wenv, 95)))


def window_still_level(motion: np.ndarray, speaking: np.ndarray) -> float:
    """The face's motion (``face.mouth_motion``) below which a window's speaking frame is
    still, before the mouth is located: below a fixed level, or well below how the mouth moves
    in this window's speech when it does (FACE_STILL of the upper quartile over its speaking
    frames; a cartoon's mouth moves ten times a photo's in these units)."""
    usual = float(np.percentile(motion[speaking], 75)) if speaking.sum() >= 10 else 0.0
    return max(MOVING_LEVEL, FACE_STILL * usual)


def _local_corr(
    m: np.ndarray, e: np.ndarray, t: np.ndarray, span_s: float = STILL_SPAN_S
) -> np.ndarray:
    """Pearson correlation of ``m`` and ``e`` over a sliding window of ``span_s`` around each
    frame: how well the mouth follows the voice, moment by moment."""
    n = max(5, int(round(span_s / max(1e-3, float(np.median(np.diff(t)))))) | 1)
    k = np.ones(n)

    def mov(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.convolve(x, k, "same") / np.convolve(np.ones_like(x), k, "same"))

    mm, me = mov(m), mov(e)
    cov = mov(m * e) - mm * me
    var = (mov(m * m) - mm * mm) * (mov(e * e) - me * me)
    return np.asarray(cov / np.sqrt(np.maximum(var, 1e-18)))


def _combine(x: np.ndarray, r: np.ndarray, peaks: np.ndarray, top: int) -> np.ndarray | None:
    """The signed, weighted sum of the ``top`` rows of ``x`` whose correlation (``r``: lags x
    rows) peaks highest, normalized; None if it vanishes."""
    order = np.argsort(peaks)[::-1][:top]
    pk = np.argmax(np.abs(r[:, order]), axis=0)
    w = np.sign(r[pk, order]) * peaks[order] ** 2
    out, ok = _normalize_rows((x[order].T @ w)[None, :])
    return out[0] if ok[0] else None


def _leading_subspace(gram: np.ndarray, size: int) -> np.ndarray:
    """An orthonormal basis (frames x size) close to the leading eigenvectors of ``gram``
    (a randomized range finder with two power iterations; a full eigendecomposition of the
    frames x frames matrix costs several times more)."""
    y = gram @ random_probe(gram.shape[0], size)
    for _ in range(2):
        y, _ = np.linalg.qr(y)
        y = gram @ y
    q, _ = np.linalg.qr(y)
    return np.asarray(q)


def _downdated_basis(
    gram: np.ndarray, sub: np.ndarray, g_sub: np.ndarray, zone: np.ndarray, rank: int
) -> np.ndarray:
    """The leading ``rank`` time courses of the cells outside ``zone`` (zone cells x frames):
    the Gram matrix less the zone's own part, one subspace iteration from the leading subspace
    of all cells, then Rayleigh-Ritz. A time course only the zone shows (the mouth's) has
    little weight there and falls out of the leading ``rank``."""
    y = g_sub - zone.T @ (zone @ sub)
    q, _ = np.linalg.qr(y)
    gq = gram @ q - zone.T @ (zone @ q)
    _, vecs = np.linalg.eigh(q.T @ gq)
    return np.asarray(q @ vecs[:, ::-1][:, :rank])


class ContentOffsetEstimator:
    """Streaming content lip-sync estimator; keeps only one window of frames and envelope."""

    def __init__(self, config: LipSyncConfig | None = None) -> None:
        self.config = config or LipSyncConfig()
        c = self.config
        n = int(round(c.max_lag_s / c.lag_step_s))
        self._lags = np.arange(-n, n + 1) * c.lag_step_s
        self._keep_s = c.window_s + 2 * c.max_lag_s + 1.0
        self._vt: deque[float] = deque()
        self._vg: deque[np.ndarray] = deque()
        # (face segment, face grid's cells then its pose: FACE_CELLS, then 3)
        self._vf: deque[tuple[int, np.ndarray] | None] = deque()
        self._at: deque[np.ndarray] = deque()
        self._av: deque[np.ndarray] = deque()
        self._next_t: float | None = None
        self._shape = DEFAULT_GRID
        self._prev: tuple[float, float] | None = None  # (time, offset) of the last raw estimate
        # the lag of the last estimate published: the voice a picture shows is this far before
        # it, where the face judges stillness before the picture's own mouth cells are learned
        self._published_lag: float | None = None
        self._model: _MouthModel | None = None
        self._face_usual: float | None = None  # see _face_frozen
        self.face_errors = 0
        self._since_full = 0  # estimates since the last full candidate search
        self._still = StillAccount(c.still_min_s, c.still_bridge_s)
        # when the first picture that moves with the speech arrived (the stream's time), once
        # the mouth has been located; frames and envelope kept from the start until then
        self.moving_at: float | None = None
        self._moving_open = True
        self._moving_tries = 0
        self._early_v: deque[tuple[float, np.ndarray]] = deque()
        self._early_a: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._early_cut = False  # the stream's first frames were dropped from it

    @property
    def lip_still(self) -> LipStill:
        """The lip-still counters (``lipstill.StillAccount``)."""
        return self._still.counts

    def clear(self) -> None:
        """Drop the buffered window (the streams were interrupted)."""
        # the first moving picture cannot be told across the interruption
        self._moving_open = False
        self._early_v.clear()
        self._early_a.clear()
        for q in (self._vt, self._vg, self._vf, self._at, self._av):
            q.clear()
        self._next_t = None
        self._prev = None
        self._published_lag = None
        self._still.reset()

    def add_video(self, t: float, grid: np.ndarray, face: FaceFrame | None = None) -> None:
        """A frame's cell means (``luma_grid``: rows x cols) arriving at ``t``; ``face``: its
        face (``face.FaceTrack``), when a face is known."""
        if grid.ndim == 2:
            self._shape = (int(grid.shape[0]), int(grid.shape[1]))
        self._vt.append(t)
        self._vg.append(np.asarray(grid, dtype=np.float32).ravel())
        self._vf.append(
            None
            if face is None
            else (face.segment, np.concatenate([np.ravel(face.grid), np.ravel(face.pose)]))
        )
        while self._vt and self._vt[0] < t - self._keep_s:
            self._vt.popleft()
            self._vg.popleft()
            self._vf.popleft()
        if self._moving_open:
            self._early_v.append((t, self._vg[-1]))
            while self._early_v[0][0] < t - MOVING_KEEP_S:
                self._early_v.popleft()
                self._early_cut = True

    def add_envelope(self, t: np.ndarray, rms: np.ndarray) -> None:
        if t.size == 0:
            return
        self._at.append(t)
        self._av.append(rms)
        while self._at and self._at[0][-1] < t[-1] - self._keep_s:
            self._at.popleft()
            self._av.popleft()
        if self._moving_open:
            self._early_a.append((t, rms))
            keep = MOVING_KEEP_S + self.config.max_lag_s + MOVING_CONTEXT_S
            while self._early_a[0][0][-1] < t[-1] - keep:
                self._early_a.popleft()

    def ready_until(self) -> float | None:
        """Latest window end the buffered audio covers for every lag."""
        if not self._vt or not self._at:
            return None
        return min(self._vt[-1], float(self._at[-1][-1]) - self.config.max_lag_s)

    def poll(self) -> LipSyncEstimate | None:
        """An estimate when a hop's worth of new data has arrived, else None."""
        end = self.ready_until()
        if end is None:
            return None
        if self._next_t is None:
            self._next_t = self._vt[0] + self.config.window_s
        if end < self._next_t:
            return None
        c = self.config
        self._next_t = end + (c.hop_s if self._model is not None else min(c.hop_s, c.locate_hop_s))
        est = self.estimate(end)
        if est.offset_s is None:
            return est
        agrees = self._agrees(end, est.offset_s)
        self._prev = (end, est.offset_s)
        if not agrees and est.confidence < c.confirm_confidence:
            return replace(est, offset_s=None)  # not confirmed yet
        self._published_lag = est.offset_s + c.calibration_s
        if self._moving_open and self._model is not None:
            # (judged on the picture's own mouth cells: an estimate the face alone made
            # waits for them, rather than spending the tries)
            self._find_moving(est.offset_s + c.calibration_s)
        return est

    def _find_moving(self, lag: float) -> None:
        """When the first picture that moves with the speech arrived (``moving_at``), judged
        when an estimate is published (``lag``: its offset as received), over the frames kept
        since the stream began (up to MOVING_KEEP_S): see ``moving.moving_onset``. Judged again at
        the next estimate when it is not found (a lone confident window can have locked onto
        the head), MOVING_TRIES times at most. The mouth's signal there is its
        cells cleaned of the head's motion, taken from the cells above it (the chin and jaw
        below move with the mouth; cleaned of them over this long a stretch, the mouth lost
        its own motion)."""
        self._moving_tries += 1
        self.moving_at = self._moving_onset_kept(lag)
        log.debug(
            "first moving picture at %s (try %d, lag %.3f s)",
            self.moving_at,
            self._moving_tries,
            lag,
        )
        if self.moving_at is not None or self._moving_tries >= MOVING_TRIES:
            self._moving_open = False
            self._early_v.clear()
            self._early_a.clear()

    def _moving_onset_kept(self, lag: float) -> float | None:
        early_v, early_a = list(self._early_v), list(self._early_a)
        model, c = self._model, self.config
        if model is None or len(early_v) < 10 or not early_a:
            return None
        t = np.fromiter((x[0] for x in early_v), dtype=np.float64, count=len(early_v))
        grids = np.array([x[1] for x in early_v], dtype=np.float64)
        at = np.concatenate([x[0] for x in early_a])
        av = np.concatenate([x[1] for x in early_a]).astype(np.float64)
        hop = float(np.median(np.diff(at))) if at.size > 1 else 0.01
        env = gaussian_filter_nearest(av, c.envelope_sigma_s / hop)
        level = max(10 ** (SPEECH_DBFS / 20), SPEECH_RELATIVE * float(np.percentile(av, 95)))
        rows = np.arange(grids.shape[1]) // self._shape[1]
        above = np.nonzero(rows < int(np.min(model.cells // self._shape[1])) - 1)[0]
        if above.size < 3:
            above = np.setdiff1d(np.arange(grids.shape[1]), model.zone(self._shape))
        # the voice at lags around the located one: the lag can have moved since the stream's
        # first seconds (see moving_onset)
        voices = np.interp(t[:, None] - (lag + MOVING_LAGS)[None, :], at, env)
        mouths = []
        for causal in (False, True):
            hp = Highpass(t, c.highpass_sigma_s, causal=causal)
            hpg = np.asarray(hp @ grids)
            xo, ok = _normalize_rows(hpg[:, above].T)
            if not ok.any():
                return None
            q = leading_time_courses(
                xo[ok].T, max(1, min(c.nuisance_rank, t.size // 4, int(ok.sum()) // 3))
            )
            mouths.append(model.signal(hpg, q))
            if not causal:
                e = np.asarray(hp @ voices).T
                head = q[:, :MOVING_HEAD_COURSES]
        spans = [(s0 + lag, s1 + lag) for s0, s1 in stretches(at, env > level)]
        known = t >= t[-1] - c.window_s  # where the mouth was located
        return moving_onset(
            t, (mouths[0], e), mouths[1], known, spans, cut=self._early_cut, head=head
        )

    def _picture(self, v_n: np.ndarray, v_ok: np.ndarray) -> _Picture:
        """The window's cells and their strongest common time courses, once per window for
        every search in it: the frames x frames Gram matrix of the cells and its leading
        subspace (with room to spare)."""
        c = self.config
        cols = self._shape[1]
        idx = np.nonzero(v_ok)[0]
        vv = v_n[idx]
        frames = vv.shape[1]
        rank = min(c.region_rank, frames // 4, max(1, idx.size // 3))
        gram = vv.T @ vv
        sub = _leading_subspace(gram, min(frames, rank + 12))
        return _Picture(
            idx,
            vv,
            np.stack([idx // cols, idx % cols], axis=1),
            rank,
            gram,
            sub,
            gram @ sub,
            {},
            {},
        )

    def _find_mouth(
        self, a_n: np.ndarray, pic: _Picture, full: bool = True
    ) -> tuple[_Mouth | None, np.ndarray | None, np.ndarray | None]:
        """The mouth (its normalized signal, cells and weights), or None; the nuisance basis of
        the last mouth found (``self._model``) in this window, for the lip-still check; and the
        plain signal of the cells that follow the speech best, uncleaned.

        The cells that correlate best with the speech are often not the mouth: a talking head
        nods and rolls with the speech's prosody, and its edges then follow the speech too,
        only at another lag. What tells the mouth apart is that its motion is its own: the
        rest of the picture does not show it. So each candidate region (a cell with a strong
        correlation peak and its neighbours) is cleaned of what the cells away from it
        explain -- the few strongest common time courses outside it (``nuisance_rank``):
        the head's rigid motion, exposure steps, breathing -- and the region whose cleaned
        signal still follows the speech best is the mouth. A head edge is explained by the
        other edges of the same head and loses its correlation; a mouth frozen shut leaves no
        region with one.

        Not ``full``: only the last mouth's region is tried (the search costs a subspace
        iteration per candidate; a mouth rarely moves between windows), centred where the
        search that found it was (``_MouthModel.seed``). Centred on the mouth's strongest
        cell instead, which can lie at that region's edge, it left the rest of the mouth
        among the cells it is cleaned of: over 120 s of received pictures of the
        photographic reference face, the full search had to follow it in 39 of the 56
        windows that searched, against 2 centred on the seed (docs/performance.md).
        """
        c = self.config
        idx, vv, cell_rc = pic.idx, pic.vv, pic.cell_rc
        seeds, classic = self._seeds(a_n, pic, full)
        if self._model is not None:  # where the mouth was: it rarely moves between windows
            at = np.nonzero(idx == self._model.seed)[0]
            if at.size and int(at[0]) not in seeds:
                seeds.append(int(at[0]))
        best: _Mouth | None = None
        for j in seeds:
            d = np.max(np.abs(cell_rc - cell_rc[j]), axis=1)
            zone = np.nonzero(d <= c.exclusion)[0]
            region = np.nonzero(d <= 1)[0]
            x = vv[region]
            q = pic.basis(zone)
            x = x - (x @ q) @ q.T
            xn, ok = _normalize_rows(x)
            if not ok.any():
                continue
            rr = a_n @ xn.T
            pk = np.argmax(np.abs(rr), axis=0)
            pv = np.abs(rr[pk, np.arange(rr.shape[1])]) * ok
            top = np.argsort(pv)[::-1][: c.top_cells]
            top = top[pv[top] > 0]
            w = np.sign(rr[pk[top], top]) * pv[top] ** 2
            mouth, mok = _normalize_rows((xn[top].T @ w)[None, :])
            if not mok[0]:
                continue
            score = float(np.max(a_n @ mouth[0]))
            if best is None or score > best.score:
                best = _Mouth(mouth[0], idx[region[top]], w, score, q, int(idx[j]))
        model_q = None
        if self._model is not None:
            near = np.isin(idx, self._model.zone(self._shape))
            if near.any() and not near.all():
                model_q = pic.basis(np.flatnonzero(near))
        return best, model_q, classic

    def _seeds(
        self, a_n: np.ndarray, pic: _Picture, full: bool
    ) -> tuple[list[int], np.ndarray | None]:
        """The candidate mouth cells (rows of ``vv``): per way of ranking the cells -- as they
        are, and cleaned of the picture's strongest few common time courses -- the
        ``candidates`` best-correlated cells that are not neighbours; and the plain signal of
        the cells that follow the speech best. Not ``full``: the plain ranking only."""
        c = self.config
        vv, cell_rc, rank = pic.vv, pic.cell_rc, pic.rank
        seeds: list[int] = []
        classic = None
        ranks = sorted({0, min(c.nuisance_rank // 2, rank), min(c.nuisance_rank, rank)})
        if full:
            _, vecs = np.linalg.eigh(pic.sub.T @ pic.g_sub)
            glob = pic.sub @ vecs[:, ::-1]
        else:
            ranks = [0]
        for k in ranks:
            if k:
                q = glob[:, :k]
                x, _ = _normalize_rows(vv - (vv @ q) @ q.T)
                r = a_n @ x.T
                peaks = np.max(np.abs(r), axis=0)
            else:
                if "r" not in pic.plain:
                    pic.plain["r"] = a_n @ vv.T
                    pic.plain["peaks"] = np.max(np.abs(pic.plain["r"]), axis=0)
                r, peaks = pic.plain["r"], pic.plain["peaks"]
                classic = _combine(vv, r, peaks, c.top_cells)
                if not full:
                    break
            picked: list[int] = []
            for j in np.argsort(peaks)[::-1]:
                if len(picked) >= c.candidates:
                    break
                if all(np.max(np.abs(cell_rc[j] - cell_rc[i])) > 1 for i in picked):
                    picked.append(int(j))
            seeds += [j for j in picked if j not in seeds]
        return seeds, classic

    # -- a mouth that does not move while the voice speaks -----------------------------------
    def _learn_mouth(self, found: _Mouth, lag: float) -> None:
        """Keep the mouth of a confident window, for the lip-still check."""
        self._model = _MouthModel(found.cells, found.weights, lag, found.seed)

    def _audio(self, tk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The buffered envelope's times, the envelope smoothed, and its raw values within the
        frames ``tk``."""
        at = np.concatenate(list(self._at))
        av = np.concatenate(list(self._av))
        hop = float(np.median(np.diff(at))) if at.size > 1 else 0.01
        sigma = self.config.envelope_sigma_s / hop
        env = gaussian_filter_nearest(av.astype(np.float64), sigma)
        return at, env, av[(at > tk[0]) & (at <= tk[-1])]

    def finish(self) -> None:
        """The stream ended (a recording's end): the frames its last window left unjudged
        (the last hop and the judging margin, up to 2 s) are judged on the face, up to the
        last. A freeze that ran to the end of a recording counted 0.4-1.6 s short without
        this. (Judged by what follows the voice they stay unjudged: that needs the
        correlation's span around each frame.)"""
        if len(self._vt) < 10 or not self._at:
            return
        vt = np.fromiter(self._vt, dtype=np.float64, count=len(self._vt))
        if self._model is not None:
            # the window that ends at the last frame, as a located mouth's windows judge;
            # its estimate is not published (the audio ends before its longest lags)
            self.estimate(float(vt[-1]), final=True)
            return
        idx = np.nonzero(vt > vt[-1] - self.config.window_s)[0]
        at, env, wenv = self._audio(vt[idx])
        voice = (at, env, speech_level(wenv))
        face, _ = self._face_motion(self._face_window(idx, vt[idx]), vt[idx], voice)
        if wenv.size and face is not None:
            self._face_still(face, at, env, wenv, final=True)

    def _face_window(self, idx: np.ndarray, tk: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The window's frames that show the last face box (their times) and their faces
        (frames x FACE_CELLS + 3: the grid's cells, then the pose); None unless FACE_MIN_S of
        them or more."""
        last = self._vf[int(idx[-1])]
        if last is None:
            return None
        seg = last[0]
        faces = [self._vf[int(i)] for i in idx]
        # one box's frames are contiguous: a box that changes or is lost starts a new segment
        keep = np.nonzero([f is not None and f[0] == seg for f in faces])[0]
        tf = tk[keep]
        if keep.size < 10 or tf[-1] - tf[0] < FACE_MIN_S:
            return None
        grids = np.array([faces[int(k)][1] for k in keep], dtype=np.float64)  # type: ignore[index]
        return tf, grids

    def _face_motion(
        self,
        window: tuple[np.ndarray, np.ndarray] | None,
        tk: np.ndarray,
        voice: tuple[np.ndarray, np.ndarray, float],
        hp_all: Highpass | None = None,
    ) -> tuple[FaceMotion | None, np.ndarray | None]:
        """The face's frames (``_face_window``) and what each shows (``FaceMotion``: the
        mouth's own motion, its change from the frame before, the head's speed), or None; and
        the face grids high-passed when they cover the
        whole window (for the content estimate: ``_face_judge``), else None. ``voice``: the
        envelope's times, values (smoothed) and speech level, whose pauses check the pose's
        fit (at the located mouth's lag, 0 before). ``hp_all``: the window's high-pass, used
        when the face is on all its frames."""
        if window is None:
            return None, None
        tf, grids = window
        whole = hp_all is not None and tf.size == tk.size
        hp = hp_all if whole else Highpass(tf, self.config.highpass_sigma_s)
        hpf = np.asarray(hp @ grids)
        pauses = _pauses(tf - self._lag(), *voice)
        try:
            fps = 1.0 / float(np.median(np.diff(tf)))
            motion = mouth_motion(hpf[:, :FACE_CELLS], fps, hpf[:, FACE_CELLS:], pauses)
            change = mouth_change(grids[:, :FACE_CELLS], fps, grids[:, FACE_CELLS:], pauses)
        except np.linalg.LinAlgError as e:  # a window the face cannot judge, not a dead stream
            self.face_errors += 1
            log.warning(
                "mouth motion not measured on this window (%s; %d so far)", e, self.face_errors
            )
            return None, None
        # the head's speed from frame to frame: its pose's change (pixels of the registered
        # square), which the mouth's change is judged against as the voice resumes (lipstill)
        head = np.linalg.norm(
            np.diff(grids[:, FACE_CELLS:], axis=0, prepend=grids[:1, FACE_CELLS:]), axis=1
        )
        return FaceMotion(tf, motion, change, head), (hpf if whole else None)

    def _face_frozen(
        self, face: FaceMotion | None, tk: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Frames (of ``tk``) the face judges, and those of them where it shows the mouth
        moving less than FACE_STILL of its usual speaking motion (the upper quartile over the
        speaking frames of the last window that located the mouth).

        Where the face is seen it decides, not the correlation with the voice: that spans
        1.2 s and blurs an episode's edges by as much; a frozen mouth on a nodding head keeps
        some of it for seconds (what the mouth's signal holds of the head); and on a coarse,
        blurred picture (15 fps VP8 at 150 kbps) it lost a second of a mouth that went on
        moving. The registered face separates them (see face.py): frozen mouths move a few per
        cent of their usual, the speaking frames of moving ones mostly well above FACE_STILL
        of it (the threshold was set on the lip-still bench)."""
        known, frozen = np.zeros(tk.size, bool), np.zeros(tk.size, bool)
        if face is None or self._face_usual is None:
            return known, frozen
        tf, motion = face.t, face.motion
        known = np.isin(tk, tf)
        frozen[known] = motion < FACE_STILL * self._face_usual
        return known, frozen

    def _face_still(
        self,
        face: FaceMotion,
        at: np.ndarray,
        env: np.ndarray,
        wenv: np.ndarray,
        final: bool = False,
    ) -> None:
        """Judge the window's new frames on the face: ``face`` from _face_motion. ``final``:
        up to the last frame (the stream ended)."""
        tf, motion, change = face.t, face.motion, face.change
        level = speech_level(wenv)
        speech_at = _speaking(tf - self._lag(), at, env, level)
        moving = window_still_level(motion, speech_at)
        still = _without_blips(tf, motion, motion < moving, moving)
        # the face's measure is local (MOTION_SPAN_S), not a correlation span, and so is the
        # margin a frame needs from the window's ends; the edges are the change's (lipstill.py)
        margin = MOTION_SPAN_S / 2
        margins = (margin, 0.0 if final else margin)
        self._still.judge(tf, still, still, speech_at, margins, change, face.head)

    def _lag(self) -> float:
        """How far the picture is behind the voice, as far as is known: the located mouth's
        lag, else the last published estimate's (the face's own judge published it without
        the picture's cells being learned: a viseme mouth on a nodding head mostly), else 0.
        (Judged at 0, a picture 200 ms late had its freezes counted 0.3-0.4 s long at 15 fps:
        the speech placed against them was the speech 200 ms after the one they showed.)"""
        if self._model is not None:
            return self._model.lag
        return 0.0 if self._published_lag is None else self._published_lag

    def _region_holds(self, judged: tuple[float, float, float] | None, end: float) -> bool:
        """Whether the last mouth's region alone (``judged``: its lag, peak, confidence) says
        enough to skip the full search this window: confident enough to publish, at the lag of
        the estimate before it (``_agrees``, as ``poll`` confirms). A region that lost the
        mouth (a turn, a cut) or locked onto another lag is searched again from every
        candidate. Not ``confirm_confidence``: a viseme mouth on a nodding head reads 0.35-0.6
        window after window, and searching every candidate each time found the same lag at the
        same confidence nine times in ten (docs/performance.md)."""
        c = self.config
        if judged is None or judged[2] < c.min_confidence:
            return False
        return self._agrees(end, judged[0] - c.calibration_s)

    def _agrees(self, end: float, offset: float) -> bool:
        """Whether the last raw estimate (within 3.5 hops of ``end``) gave ``offset`` too,
        within ``agree_s``."""
        c = self.config
        return (
            self._prev is not None
            and end - self._prev[0] <= 3.5 * c.hop_s
            and abs(offset - self._prev[1]) <= c.agree_s
        )

    def _decide(
        self, a_n: np.ndarray, found: _Mouth | None, classic: np.ndarray | None
    ) -> tuple[float, float, float] | None:
        """Lag, peak and confidence of the mouth found; the plain best cells, where they
        agree, say it with their (higher) confidence: when nothing else moves with the speech
        they are the mouth, and cleaning only adds noise."""
        judged = None if found is None else self._judge(a_n, found.signal)
        if judged is None:
            return None
        plain = None if classic is None else self._judge(a_n, classic)
        if plain is not None and abs(plain[0] - judged[0]) <= self.config.agree_s:
            if plain[2] > judged[2]:
                return plain
        return judged

    def _face_judge(
        self, a_n: np.ndarray, hpf: np.ndarray, span: int
    ) -> tuple[float, float, float] | None:
        """Lag, peak and confidence of the registered face's mouth (``hpf``: the window's
        face grids, high-passed): its mouth zone's cells, cleaned of the face's strongest
        common time courses away from the mouth (``AWAY_CELLS``: the light, and what
        registration left of the head), combined as the plain best cells are. Registration
        took most of the head's motion out of them: on a busy, wrinkled face at 360p
        nodding with the speech (the hopper portrait), where the picture's own cells gave
        peaks of 0.35-0.5 and a neighbouring syllable's lag won a window pair, these gave
        0.75-0.85 at the true lag.

        They are cleaned of what follows the head's pose too (``face.without_pose``,
        ``span``: frames of the face's motion span): on the cartoon, where a mouth froze for
        3 s of a window on a nodding head (bench_content's still-synthetic clip), what
        registration leaves of the nod in the mouth zone won six windows in a row at the
        head's lead (-207 ms for a 0 ms truth, confidence 0.4-0.6, the picture's cells saying
        +20 less surely); cleaned, +19."""
        try:
            rank = min(JUDGE_RANK, max(1, hpf.shape[0] // 8))
            q = leading_time_courses(hpf[:, AWAY_CELLS], rank)
            x = hpf[:, MOUTH_CELLS]
            x = x - q @ (q.T @ x)
            pose = hpf[:, FACE_CELLS:]
            x = without_pose(x, pose - q @ (q.T @ pose), span)
        except np.linalg.LinAlgError as e:  # this window's face says nothing, as in _face_motion
            self.face_errors += 1
            log.warning("face not judged on this window (%s; %d so far)", e, self.face_errors)
            return None
        xn, ok = _normalize_rows(x.T)
        if not ok.any():
            return None
        r = a_n @ xn.T
        m = _combine(xn, r, np.max(np.abs(r), axis=0) * ok, self.config.top_cells)
        return None if m is None else self._judge(a_n, m)

    def _judge(self, a_n: np.ndarray, m: np.ndarray) -> tuple[float, float, float] | None:
        """Lag (parabolic peak), peak correlation and confidence of a mouth signal; None when
        the peak is at the edge of the search range."""
        c = self.config
        curve = a_n @ m
        best = int(np.argmax(curve))
        peak = float(curve[best])
        if best in (0, curve.size - 1):
            return None
        y0, y1, y2 = curve[best - 1], curve[best], curve[best + 1]
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
        lag = float(self._lags[best] + frac * c.lag_step_s)
        # null: the same mouth signal against audio shifted well outside the search range
        k = m.size
        shifts = np.linspace(k / 8, 7 * k / 8, 12).astype(int)
        rolled = m[(np.arange(k)[None, :] - shifts[:, None]) % k]  # np.roll(m, s) per shift
        null_ref = float(np.max(a_n @ rolled.T))
        conf = float(np.clip((peak - null_ref) / max(1e-6, 1.0 - null_ref), 0.0, 1.0))
        return lag, peak, conf * self._rival_factor(curve, best)

    def _rival_factor(self, curve: np.ndarray, best: int) -> float:
        """1 when the peak stands alone, down to 0 as another local peak, further than the
        mouth's own smoothing (50 ms), rises to its height: then the lag is ambiguous (a
        neighbouring syllable can win) and saying so beats publishing the wrong one."""
        c = self.config
        far = np.abs(np.arange(curve.size) - best) * c.lag_step_s > 0.05
        inner = curve[1:-1]
        local = np.zeros(curve.size, bool)
        local[1:-1] = (inner >= curve[:-2]) & (inner >= curve[2:])
        rivals = curve[local & far]
        if rivals.size == 0 or curve[best] <= 0:
            return 1.0
        ratio = float(np.max(rivals) / curve[best])
        return float(np.clip((1.0 - ratio) / (1.0 - c.rival_ratio), 0.0, 1.0))

    def estimate(self, end: float, final: bool = False) -> LipSyncEstimate:
        """Estimate over the window of frames ending at ``end``. ``final``: the stream ended
        at ``end`` (``finish``): where the face shows the mouth, still frames are judged up to
        the last."""
        c = self.config
        vt = np.fromiter(self._vt, dtype=np.float64, count=len(self._vt))
        sel = (vt > end - c.window_s) & (vt <= end)
        none = LipSyncEstimate(end, None, 0.0, 0.0, 0.0)
        if np.count_nonzero(sel) < 10 or not self._at:
            return none
        idx = np.nonzero(sel)[0]
        tk = vt[idx]
        grids = np.array([self._vg[i] for i in idx], dtype=np.float64)
        at, env, wenv = self._audio(tk)
        if wenv.size == 0:
            return none
        level = speech_level(wenv)
        # until the mouth has been located by what follows the voice, its stillness is judged
        # on the face (see face.py): a mouth frozen from the start is never located
        hp = Highpass(tk, c.highpass_sigma_s)
        face, face_hp = self._face_motion(self._face_window(idx, tk), tk, (at, env, level), hp)
        face_judged = self._model is None and face is not None
        if face_judged:
            assert face is not None
            self._face_still(face, at, env, wenv)
        if at[0] > tk[0] - c.max_lag_s - 0.1:
            return none  # audio does not reach back far enough yet
        # speech gate over the window's audio
        speech = float(np.mean(wenv > level)) if np.max(wenv) > 10 ** (SPEECH_DBFS / 20) else 0.0
        if speech < c.min_speech_fraction:
            return LipSyncEstimate(end, None, 0.0, 0.0, speech)

        a = np.interp((tk[None, :] - self._lags[:, None]).ravel(), at, env).reshape(
            self._lags.size, tk.size
        )
        a_n, a_ok = _normalize_rows(np.asarray(hp @ a.T).T)
        hpg = np.asarray(hp @ grids)  # frames x cells, luma units
        v_n, v_ok = _normalize_rows(hpg.T)  # cells x frames
        if not v_ok.any() or not a_ok.all():
            return LipSyncEstimate(end, None, 0.0, 0.0, speech)  # static picture or flat audio
        full = self._model is None or self._since_full + 1 >= c.full_search_every
        pic = self._picture(v_n, v_ok)
        found, model_q, classic = self._find_mouth(a_n, pic, full)
        judged = self._decide(a_n, found, classic)
        if not full and not self._region_holds(judged, end):
            full = True  # the last mouth's region alone is not sure: search them all
            found, model_q, classic = self._find_mouth(a_n, pic, full)
            judged = self._decide(a_n, found, classic)
        self._since_full = 0 if full else self._since_full + 1
        span = max(3, int(round(MOTION_SPAN_S / float(np.median(np.diff(tk))))))
        by_face = None if face_hp is None else self._face_judge(a_n, face_hp, span)
        if by_face is not None and by_face[2] > (0.0 if judged is None else judged[2]):
            if judged is None or abs(by_face[0] - judged[0]) > c.agree_s:
                # the picture's own cells found no mouth, or another lag, less surely: they
                # followed the head or a neighbouring syllable, and are not learned as the
                # mouth
                found = None
            judged = by_face  # the registered face's mouth says it more surely
        if face_hp is not None and judged is not None:
            assert face is not None
            # Where the face is seen over the whole window, a lag is published only if it
            # shows the mouth moving while the voice speaks. On a mouth frozen shut, what
            # follows the voice is the head: the registered mouth zone's residue of it (0.1-0.57
            # on the bench's frozen cartoon, astronaut and hopper), and the picture's own
            # cells, which on an astronaut frozen from the start whose head led by 228 ms
            # (bench_content --seed 7) published -228 ms at 0.37-0.46 four windows running
            # (the voice a frame shows is the one ``judged``'s lag before it)
            spk = _speaking(tk - judged[0], at, env, level)
            moving = (
                np.count_nonzero(spk) >= 10 and float(np.median(face.motion[spk])) >= MOVING_LEVEL
            )
            if not moving:
                found = None
                judged = (judged[0], judged[1], 0.0)
        if self._model is not None and model_q is not None and not face_judged:
            li = int(np.argmin(np.abs(self._lags - self._model.lag)))
            # (the window's own speech level: a mouth located by what follows the voice is
            # judged where the voice is clear; the quieter ends of words counted as still on
            # clean clips)
            # widened by STILL_SPEECH_WIDEN_S, as the face's: two frames either side (as
            # before) counted 0.13 s more of each stretch of speech at 15 fps than at 30
            speech_at = _speaking(tk - self._model.lag, at, env, level)
            m_abs = self._model.signal(hpg, model_q)
            act = _local_corr(m_abs, np.asarray(hp @ a[li]), tk)
            # still: the face does not show the mouth moving as it does speaking, or where no
            # face is seen, the mouth's own motion no longer follows the voice
            known, frozen = self._face_frozen(face, tk)
            still = np.where(known, frozen, act < c.still_ratio)
            change, head = np.full(tk.size, np.nan), np.full(tk.size, np.nan)
            if face is not None and known.any():
                change[known] = face.change
                head[known] = face.head
            edge = np.where(known, frozen, act < STILL_EDGE_CORR)
            margin = (STILL_SPAN_S / 2, STILL_SPAN_S / 2)
            if final and known[tk > tk[-1] - STILL_SPAN_S / 2].all():
                # the face's motion is local (a one-sided mean at the very end, as finish
                # judges a face alone); the correlation's span would reach past the end
                margin = (STILL_SPAN_S / 2, 0.0)
            self._still.judge(tk, still, edge, speech_at, margin, change=change, head=head)
        if judged is None:
            return LipSyncEstimate(end, None, 0.0, 0.0, speech)
        lag, peak, conf = judged
        offset = lag - c.calibration_s if conf >= c.min_confidence else None
        if offset is not None and found is not None:
            # frames before the mouth was first located are not judged: looking back over the
            # window that found it counted a stream's first seconds as still on a clip whose
            # mouth moved throughout
            if self._model is None and not face_judged:
                self._still.judged_until = max(
                    self._still.judged_until, float(tk[-1]) - STILL_SPAN_S / 2
                )
            self._learn_mouth(found, lag)
        if offset is not None:
            if face is not None:
                # how much the face shows the mouth moving while it follows the voice
                tf, motion = face.t, face.motion
                spk = _speaking(tf - lag, at, env, level)
                if np.count_nonzero(spk) >= 10:
                    self._face_usual = float(np.percentile(motion[spk], 75))
        return LipSyncEstimate(end, offset, conf, peak, speech)
