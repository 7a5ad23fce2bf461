"""The few linear filters the estimators use, in numpy alone.

scipy has them all (``scipy.ndimage.gaussian_filter1d`` and ``uniform_filter1d``, a
``scipy.sparse`` band matrix for the high-pass), but importing those costs every monitor
process ~25 MiB of resident memory (``scipy.ndimage`` pulls in ``scipy.special``; ``sparse`` and
scipy's own OpenBLAS the rest) for three short loops, and a worker runs one monitor process per
core. These give scipy's results to rounding (``tests/test_filters.py`` checks them against
scipy itself, which the reference avatar still uses).
"""

from __future__ import annotations

import numpy as np

GAUSS_TRUNCATE = 4.0  # sigmas, as scipy's gaussian_filter1d
HIGHPASS_REACH = 4.0  # sigmas: the Gaussian's weight beyond is < 4e-4 of its peak
BLOCK_ROWS = 32


def _float(x: np.ndarray) -> np.dtype[np.floating]:
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)


def gaussian_filter_nearest(x: np.ndarray, sigma: float) -> np.ndarray:
    """``x`` (1-D) smoothed with a Gaussian of ``sigma`` samples truncated at 4 sigmas, the
    edges extended by their nearest value (``gaussian_filter1d(x, sigma, mode="nearest")``)."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"gaussian_filter_nearest takes a 1-D array, got shape {x.shape}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    r = int(GAUSS_TRUNCATE * float(sigma) + 0.5)
    k = np.exp(-0.5 / (sigma * sigma) * np.arange(-r, r + 1, dtype=np.float64) ** 2)
    k /= k.sum()
    out = np.convolve(np.pad(x.astype(np.float64), r, mode="edge"), k, mode="valid")
    return out.astype(_float(x))


def uniform_filter_nearest(x: np.ndarray, size: int, axis: int = 0) -> np.ndarray:
    """The mean of ``size`` samples along ``axis`` around each (``size // 2`` of them before
    it), the edges extended by their nearest value (``uniform_filter1d(x, size, axis,
    mode="nearest")``)."""
    x = np.asarray(x)
    size = int(size)
    if size < 1:
        raise ValueError(f"filter size must be at least 1, got {size}")
    axis = axis % x.ndim
    before = size // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (before + 1, size - 1 - before)
    xp = np.pad(x.astype(np.float64), pad, mode="edge")
    # (the extra leading sample is the running sum's zero)
    xp[(slice(None),) * axis + (0,)] = 0.0
    c = np.cumsum(xp, axis=axis)
    n = x.shape[axis]
    hi = c[(slice(None),) * axis + (slice(size, size + n),)]
    lo = c[(slice(None),) * axis + (slice(0, n),)]
    return ((hi - lo) / size).astype(_float(x))


class Highpass:
    """``I - W``, W the row-normalized Gaussian smoother (``sigma`` s) over the frame times
    ``t`` (sorted, not necessarily uniform: drops and jitter), applied with ``hp @ x`` to
    frames (x: frames, or frames x columns). Banded: each row holds the frames within
    ``HIGHPASS_REACH`` sigmas, so applying it costs frames x band, not frames^2. ``causal``:
    the smoother looks back only (a step shows from where it is, not before).

    Kept as dense blocks of ``BLOCK_ROWS`` rows by the columns their band reaches (one small
    BLAS product each: a band of 17 frames at 25 fps makes a block 32 x 49): as fast as
    ``scipy.sparse``'s product, where a gather of the band's frames in numpy was three times
    slower."""

    def __init__(self, t: np.ndarray, sigma: float, causal: bool = False) -> None:
        t = np.asarray(t, dtype=np.float64)
        n = t.size
        lo = np.searchsorted(t, t - HIGHPASS_REACH * sigma, side="left")
        hi = np.searchsorted(t, t if causal else t + HIGHPASS_REACH * sigma, side="right")
        self.shape = (n, n)
        self._blocks: list[tuple[int, int, int, int, np.ndarray]] = []
        for s in range(0, n, BLOCK_ROWS):
            e = min(n, s + BLOCK_ROWS)
            c0, c1 = int(lo[s:e].min()), int(hi[s:e].max())
            cols = np.arange(c0, c1)
            inside = (cols[None, :] >= lo[s:e, None]) & (cols[None, :] < hi[s:e, None])
            w = np.exp(-0.5 * ((t[s:e, None] - t[None, c0:c1]) / sigma) ** 2) * inside
            w /= w.sum(axis=1, keepdims=True)
            d = -w
            d[np.arange(e - s), np.arange(s, e) - c0] += 1.0
            self._blocks.append((s, e, c0, c1, d))

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[0] != self.shape[1]:
            raise ValueError(f"high-pass over {self.shape[1]} frames applied to shape {x.shape}")
        out = np.empty(x.shape, dtype=np.float64)
        for s, e, c0, c1, d in self._blocks:
            out[s:e] = d @ x[c0:c1]
        return out

    def toarray(self) -> np.ndarray:
        """The dense matrix (for tests)."""
        return np.asarray(self @ np.eye(self.shape[0]))
