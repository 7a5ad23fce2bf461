"""The drift slope (``analysis.drift``): Theil-Sen over the window's estimates, recomputed only
when an estimate was added (every scrape asks for it)."""

from __future__ import annotations

import numpy as np
import pytest

from syncmon.analysis.drift import DriftEstimator, theil_sen_slope


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


@pytest.mark.parametrize("seed", range(6))
def test_theil_sen_slope_is_scipys(seed: int) -> None:
    """The slope written out (scipy.stats is not imported by the monitor) is scipy's, on
    points with outliers and repeated x."""
    from scipy.stats import theilslopes

    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 300))
    x = np.round(rng.uniform(0, 600, n), 0 if seed % 2 else 3)  # whole seconds: repeated x
    y = 2e-5 * x + rng.normal(0, 0.002, n)
    y[rng.choice(n, n // 5, replace=False)] += rng.normal(0, 0.2, n // 5)  # wrong estimates
    assert theil_sen_slope(y, x) == pytest.approx(float(theilslopes(y, x)[0]), rel=1e-12)
    # and it is robust: the outliers do not tilt it far from the truth
    assert abs(theil_sen_slope(y, x) - 2e-5) < 2e-5


def test_theil_sen_slope_needs_two_different_x() -> None:
    with pytest.raises(ValueError, match="all x are equal"):
        theil_sen_slope([1.0, 2.0], [5.0, 5.0])
    with pytest.raises(ValueError, match="1-D and alike"):
        theil_sen_slope([1.0, 2.0, 3.0], [5.0, 6.0])
