"""The drift slope (``analysis.drift``): Theil-Sen over the window's estimates, recomputed only
when an estimate was added (every scrape asks for it)."""

from __future__ import annotations

import numpy as np
import pytest

from syncmon.analysis.drift import DriftEstimator


def test_the_slope_follows_each_new_estimate_and_is_not_recomputed_between() -> None:
    d = DriftEstimator(window_s=600.0)
    rng = np.random.default_rng(3)
    ppm = 40.0  # the video clock 40 ppm slow: +2.4 ms a minute
    for k in range(60):
        t = 2.0 * k
        d.add(t, 0.080 + ppm * 1e-6 * t + rng.normal(0, 0.001))
    first = d.estimate()
    assert first is not None and first.ms_per_min == pytest.approx(ppm * 0.06, abs=0.6)
    assert d.estimate() is first  # nothing added: the same estimate, not a new computation
    # the clock turns: estimates now run 200 ppm fast; the slope must move with them
    for k in range(60, 200):
        t = 2.0 * k
        d.add(t, 0.080 + ppm * 1e-6 * 120.0 - 200e-6 * (t - 120.0))
        est = d.estimate()
        assert est is not None and est.points == k + 1
    assert est.ms_per_min < 0 and est.ms_per_min == pytest.approx(-200 * 0.06, abs=1.0)
