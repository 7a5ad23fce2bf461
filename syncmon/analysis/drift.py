"""Drift: the slope of the A/V offset over a long window.

A video clock that runs ``ppm`` parts per million slow against the audio clock adds
``ppm * 1e-6`` seconds of offset per second, i.e. ``ppm * 0.06`` ms per minute. The slope is the
Theil-Sen estimator: a few wrong windowed offsets do not tilt it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def theil_sen_slope(y: ArrayLike, x: ArrayLike) -> float:
    """The Theil-Sen slope of ``y`` over ``x``: the median of the slopes between every two
    points whose x differ -- ``scipy.stats.theilslopes``' slope, written out because importing
    ``scipy.stats`` costs every monitor process ~43 MiB of RSS for this one median."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D and alike, got {xa.shape} and {ya.shape}")
    dx = xa[:, None] - xa[None, :]
    up = dx > 0
    if not up.any():
        raise ValueError("all x are equal: no slope")
    dy = ya[:, None] - ya[None, :]
    return float(np.median(dy[up] / dx[up]))


@dataclass(frozen=True)
class DriftEstimate:
    ms_per_min: float
    skew_ppm: float
    span_s: float
    points: int


class DriftEstimator:
    """Offset slope over the last ``window_s`` seconds of estimates (bounded memory)."""

    def __init__(
        self, *, window_s: float = 600.0, min_span_s: float = 45.0, min_points: int = 10
    ) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self.min_points = min_points
        self._pts: deque[tuple[float, float]] = deque(maxlen=4096)
        # Theil-Sen is quadratic in the points (~300 in a window at the live cadence) and every
        # scrape asks: the slope is kept until a point is added
        self._added = 0
        self._cached: tuple[int, DriftEstimate | None] | None = None

    def add(self, t: float, offset_s: float) -> None:
        self._pts.append((t, offset_s))
        while self._pts and self._pts[0][0] < t - self.window_s:
            self._pts.popleft()
        self._added += 1

    def estimate(self) -> DriftEstimate | None:
        added = self._added  # (read first: a point added meanwhile makes the next call redo it)
        if self._cached is None or self._cached[0] != added:
            self._cached = (added, self._estimate())
        return self._cached[1]

    def _estimate(self) -> DriftEstimate | None:
        if len(self._pts) < self.min_points:
            return None
        # tuple() copies the deque in one step: a worker's scrape reads while its room adds
        arr = np.asarray(tuple(self._pts))
        span = float(arr[-1, 0] - arr[0, 0])
        if span < self.min_span_s:
            return None
        slope = theil_sen_slope(arr[:, 1], arr[:, 0])
        return DriftEstimate(slope * 60_000.0, slope * 1e6, span, len(self._pts))
