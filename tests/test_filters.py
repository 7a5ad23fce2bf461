"""The estimators' filters in numpy alone give what scipy's give (scipy is the truth here: the
monitor no longer imports it, to save each monitor process its ~25 MiB)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import sparse
from scipy.ndimage import gaussian_filter1d, uniform_filter1d

from syncmon.analysis.filters import Highpass, gaussian_filter_nearest, uniform_filter_nearest

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("n", [1, 2, 7, 64, 301])
@pytest.mark.parametrize("sigma", [0.2, 1.0, 2.7, 12.5])
def test_gaussian_filter_is_scipys(n: int, sigma: float) -> None:
    x = RNG.standard_normal(n) * 3 + 1
    got = gaussian_filter_nearest(x, sigma)
    assert got.dtype == np.float64 and got.shape == x.shape
    np.testing.assert_allclose(got, gaussian_filter1d(x, sigma, mode="nearest"), atol=1e-12)
    x32 = x.astype(np.float32)
    got32 = gaussian_filter_nearest(x32, sigma)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, gaussian_filter1d(x32, sigma, mode="nearest"), atol=1e-5)


@pytest.mark.parametrize("n", [1, 3, 10, 200])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 12, 250])
def test_uniform_filter_is_scipys(n: int, size: int) -> None:
    x = RNG.standard_normal((n, 5)) ** 2
    for axis in (0, 1, -1):
        want = uniform_filter1d(x, size, axis=axis, mode="nearest")
        np.testing.assert_allclose(uniform_filter_nearest(x, size, axis=axis), want, atol=1e-12)
    v = x[:, 0].astype(np.float32)
    got = uniform_filter_nearest(v, size)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, uniform_filter1d(v, size, mode="nearest"), atol=1e-5)


def _scipy_highpass(t: np.ndarray, sigma: float, causal: bool) -> sparse.csr_matrix:
    """The band matrix the estimator used to build with scipy.sparse, entry by entry."""
    n = t.size
    dense = np.zeros((n, n))
    for i in range(n):
        near = np.abs(t - t[i]) <= 4.0 * sigma
        if causal:
            near &= t <= t[i]
        w = np.where(near, np.exp(-0.5 * ((t - t[i]) / sigma) ** 2), 0.0)
        dense[i] = -w / w.sum()
        dense[i, i] += 1.0
    return sparse.csr_matrix(dense)


@pytest.mark.parametrize("causal", [False, True])
def test_highpass_is_identity_less_the_gaussian_smoother(causal: bool) -> None:
    # frame times with jitter and two dropped frames, as a stream's
    t = np.cumsum(RNG.uniform(0.035, 0.045, 300))
    t = np.delete(t, [40, 41, 170])
    hp = Highpass(t, 0.08, causal=causal)
    want = _scipy_highpass(t, 0.08, causal)
    np.testing.assert_allclose(hp.toarray(), want.toarray(), atol=1e-12)
    x = RNG.standard_normal((t.size, 33))
    np.testing.assert_allclose(hp @ x, want @ x, atol=1e-12)
    np.testing.assert_allclose(hp @ x[:, 3], want @ x[:, 3], atol=1e-12)
    # a constant goes
    np.testing.assert_allclose(hp @ np.full(t.size, 5.0), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="297 frames applied to shape"):
        _ = hp @ np.ones(10)


def test_filters_reject_what_they_cannot_filter() -> None:
    with pytest.raises(ValueError, match="size must be at least 1"):
        uniform_filter_nearest(np.ones(4), 0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        gaussian_filter_nearest(np.ones(4), 0.0)
    with pytest.raises(ValueError, match="1-D"):
        gaussian_filter_nearest(np.ones((4, 2)), 1.0)


def test_a_monitor_process_does_not_load_scipy() -> None:
    """What ``syncmon watch`` and a worker's processes import: no scipy (each module of it
    costs resident memory in every process of a worker)."""
    probe = (
        "import sys\n"
        "from syncmon.cli import main\n"
        "import syncmon.live.room, syncmon.live.pool, syncmon.live.worker, syncmon.live.http\n"
        "import syncmon.analysis.session, syncmon.analysis.face, syncmon.analysis.lipsync\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
