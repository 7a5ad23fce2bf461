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
5. Confidence compares the peak with the peaks of the same mouth signal against the audio
   shifted circularly by 1-7 s (null correlations), and is zero when the window holds too little
   speech or the picture does not move. No estimate is returned below ``min_confidence``.

Sign: ``offset = t_video - t_audio``; positive when the picture is late.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

DEFAULT_GRID = (16, 16)
# luma is subsampled (every 2nd pixel, every 4th from 1280 wide up) before cell means: a cell
# still averages hundreds of pixels and the cost per 720p frame stays well under a millisecond
GRID_TARGET_WIDTH = 640
SPEECH_DBFS = -50.0
SPEECH_RELATIVE = 0.1


def luma_grid(luma: np.ndarray, grid: tuple[int, int] = DEFAULT_GRID) -> np.ndarray:
    """Mean luma of each cell of a ``grid`` (rows, cols) laid over an 8-bit luma plane."""
    if luma.ndim != 2:
        raise ValueError(f"luma plane must be 2-D, got shape {luma.shape}")
    gh, gw = grid
    step = max(2, luma.shape[1] // GRID_TARGET_WIDTH * 2) if luma.shape[1] >= 128 else 1
    sub = luma[::step, ::step]
    h, w = sub.shape
    if h < gh or w < gw:
        raise ValueError(f"frame {luma.shape[1]}x{luma.shape[0]} is too small for grid {grid}")
    ch, cw = h // gh, w // gw
    crop = sub[: ch * gh, : cw * gw]
    sums = crop.reshape(gh, ch, gw, cw).sum(axis=(1, 3), dtype=np.uint32)
    return np.asarray(sums / float(ch * cw), dtype=np.float32)


@dataclass(frozen=True)
class LipSyncConfig:
    """Tuning of the content estimator; the defaults are what the tests hold to."""

    window_s: float = 8.0
    hop_s: float = 1.0
    max_lag_s: float = 0.5
    lag_step_s: float = 0.005
    top_cells: int = 6
    highpass_sigma_s: float = 0.15
    envelope_sigma_s: float = 0.015
    min_confidence: float = 0.3
    min_speech_fraction: float = 0.25
    calibration_s: float = 0.0

    def __post_init__(self) -> None:
        if self.window_s < 2.0:
            raise ValueError(f"window_s must be at least 2 s, got {self.window_s}")
        if not 0.0 < self.max_lag_s < self.window_s / 2:
            raise ValueError(f"max_lag_s must be in (0, window_s/2), got {self.max_lag_s}")
        if self.lag_step_s <= 0:
            raise ValueError(f"lag_step_s must be positive, got {self.lag_step_s}")


@dataclass(frozen=True)
class LipSyncEstimate:
    """One windowed estimate; ``offset_s`` is None when confidence is too low."""

    t: float
    offset_s: float | None
    confidence: float
    peak_correlation: float
    speech_fraction: float


def _highpass_matrix(t: np.ndarray, sigma: float) -> np.ndarray:
    d = t[:, None] - t[None, :]
    w = np.exp(-0.5 * (d / sigma) ** 2)
    w /= w.sum(axis=1, keepdims=True)
    return np.asarray(np.eye(t.size) - w)


def _normalize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x - x.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    ok = norm[..., 0] > 1e-9
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-9), ok


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
        self._at: deque[np.ndarray] = deque()
        self._av: deque[np.ndarray] = deque()
        self._next_t: float | None = None

    def clear(self) -> None:
        """Drop the buffered window (the streams were interrupted)."""
        for q in (self._vt, self._vg, self._at, self._av):
            q.clear()
        self._next_t = None

    def add_video(self, t: float, grid: np.ndarray) -> None:
        self._vt.append(t)
        self._vg.append(np.asarray(grid, dtype=np.float32).ravel())
        while self._vt and self._vt[0] < t - self._keep_s:
            self._vt.popleft()
            self._vg.popleft()

    def add_envelope(self, t: np.ndarray, rms: np.ndarray) -> None:
        if t.size == 0:
            return
        self._at.append(t)
        self._av.append(rms)
        while self._at and self._at[0][-1] < t[-1] - self._keep_s:
            self._at.popleft()
            self._av.popleft()

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
        self._next_t = end + self.config.hop_s
        return self.estimate(end)

    def estimate(self, end: float) -> LipSyncEstimate:
        """Estimate over the window of frames ending at ``end``."""
        c = self.config
        vt = np.fromiter(self._vt, dtype=np.float64, count=len(self._vt))
        sel = (vt > end - c.window_s) & (vt <= end)
        none = LipSyncEstimate(end, None, 0.0, 0.0, 0.0)
        if np.count_nonzero(sel) < 10 or not self._at:
            return none
        idx = np.nonzero(sel)[0]
        tk = vt[idx]
        grids = np.stack([self._vg[i] for i in idx]).astype(np.float64)
        at = np.concatenate(list(self._at))
        av = np.concatenate(list(self._av))
        if at[0] > tk[0] - c.max_lag_s - 0.1:
            return none  # audio does not reach back far enough yet
        hop = float(np.median(np.diff(at))) if at.size > 1 else 0.01
        env = gaussian_filter1d(av.astype(np.float64), c.envelope_sigma_s / hop, mode="nearest")

        # speech gate over the window's audio
        in_win = (at > tk[0]) & (at <= tk[-1])
        wenv = av[in_win]
        if wenv.size == 0:
            return none
        level = max(10 ** (SPEECH_DBFS / 20), SPEECH_RELATIVE * float(np.percentile(wenv, 95)))
        speech = float(np.mean(wenv > level)) if np.max(wenv) > 10 ** (SPEECH_DBFS / 20) else 0.0
        if speech < c.min_speech_fraction:
            return LipSyncEstimate(end, None, 0.0, 0.0, speech)

        hp = _highpass_matrix(tk, c.highpass_sigma_s)
        a = np.interp((tk[None, :] - self._lags[:, None]).ravel(), at, env).reshape(
            self._lags.size, tk.size
        )
        a_n, a_ok = _normalize_rows(a @ hp.T)
        v_n, v_ok = _normalize_rows((hp @ grids).T)  # cells x frames
        if not v_ok.any() or not a_ok.all():
            return LipSyncEstimate(end, None, 0.0, 0.0, speech)  # static picture or flat audio
        r = a_n @ v_n[v_ok].T  # lags x cells
        peak_idx = np.argmax(np.abs(r), axis=0)
        peaks = np.abs(r[peak_idx, np.arange(r.shape[1])])
        order = np.argsort(peaks)[::-1][: c.top_cells]
        signs = np.sign(r[peak_idx[order], order])
        weights = signs * peaks[order] ** 2
        mouth, ok = _normalize_rows((v_n[v_ok][order].T @ weights)[None, :])
        if not ok[0]:
            return LipSyncEstimate(end, None, 0.0, 0.0, speech)
        m = mouth[0]
        curve = a_n @ m
        best = int(np.argmax(curve))
        peak = float(curve[best])
        if best in (0, curve.size - 1):
            return LipSyncEstimate(end, None, 0.0, peak, speech)  # peak outside the search range
        y0, y1, y2 = curve[best - 1], curve[best], curve[best + 1]
        denom = y0 - 2 * y1 + y2
        frac = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
        lag = float(self._lags[best] + frac * c.lag_step_s)

        # null: the same mouth signal against audio shifted well outside the search range
        k = tk.size
        shifts = np.linspace(k / 8, 7 * k / 8, 12).astype(int)
        null = np.array([np.max(a_n @ np.roll(m, s)) for s in shifts])
        null_ref = float(np.max(null))
        conf = float(np.clip((peak - null_ref) / max(1e-6, 1.0 - null_ref), 0.0, 1.0))
        offset = lag - c.calibration_s if conf >= c.min_confidence else None
        return LipSyncEstimate(end, offset, conf, peak, speech)
