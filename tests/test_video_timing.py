"""The video timing definitions of shared/DESIGN.md on small hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from syncmon.analysis.video import VideoTimingAnalyzer, freeze_threshold, harmonic_fps


def feed(intervals_ms: list[float], **kw: object) -> VideoTimingAnalyzer:
    an = VideoTimingAnalyzer(**kw)  # type: ignore[arg-type]
    t = 0.0
    an.add_frame(t)
    for d in intervals_ms:
        t += d / 1000.0
        an.add_frame(t)
    return an


def test_freeze_threshold_is_webrtc_stats_rule() -> None:
    assert freeze_threshold(0.040) == pytest.approx(0.190)  # avg + 150 ms wins at 25 fps
    assert freeze_threshold(0.100) == pytest.approx(0.300)  # 3 x avg wins at 10 fps


def test_interval_exactly_at_threshold_is_a_freeze() -> None:
    an = feed([40.0] * 30 + [190.0], nominal_fps=25)
    s = an.stats()
    assert s.freezes == 1
    assert s.freeze_seconds == pytest.approx(0.190)


def test_interval_one_ms_under_threshold_is_not_a_freeze() -> None:
    an = feed([40.0] * 30 + [189.0], nominal_fps=25)
    assert an.stats().freezes == 0
    assert an.stats().freeze_seconds == 0.0


def test_freeze_average_is_the_previous_30_intervals_only() -> None:
    # 30 intervals of 100 ms after 10 of 40 ms: avg is 100 ms, threshold 300 ms
    assert feed([40.0] * 10 + [100.0] * 30 + [299.0], nominal_fps=10).stats().freezes == 0
    s = feed([40.0] * 10 + [100.0] * 30 + [300.0], nominal_fps=10).stats()
    assert s.freezes == 1
    assert s.freeze_seconds == pytest.approx(0.300)


def test_pause_is_over_five_seconds_and_not_a_freeze() -> None:
    an = feed([40.0] * 30 + [5000.0, 40.0, 5001.0], nominal_fps=25)
    s = an.stats()
    assert (s.pauses, s.freezes) == (1, 1)  # 5000 ms is a freeze, 5001 ms a pause


def test_drops_from_frame_id_gaps() -> None:
    an = VideoTimingAnalyzer(nominal_fps=25)
    for i, fid in enumerate([0, 1, 2, 5, 6, 8]):
        an.add_frame(i * 0.04, frame_id=fid)
    assert an.stats().dropped == 3  # 3, 4 and 7


def test_drops_from_multiples_of_the_nominal_interval() -> None:
    an = feed([40.0] * 30 + [80.0, 40.0, 120.0, 40.0, 60.0], nominal_fps=25)
    assert an.stats().dropped == 1 + 2 + 1  # 60 ms rounds to 2 slots


def test_nominal_interval_is_learnt_from_the_median() -> None:
    an = feed([33.3] * 20 + [66.7], nominal_fps=None)
    assert an.stats().nominal_interval_s == pytest.approx(0.0333, abs=1e-4)
    assert an.stats().dropped == 1


def test_rfc3550_jitter_by_hand() -> None:
    # sender 40 ms apart; arrivals 40, 50, 30: |D| = 0, 10, 10 ms
    an = VideoTimingAnalyzer(nominal_fps=25)
    for r, s in [(0.0, 0.0), (0.040, 0.040), (0.090, 0.080), (0.120, 0.120)]:
        an.add_frame(r, sender_time=s)
    j = 0.0
    for d in (0.0, 0.010, 0.010):
        j += (d - j) / 16
    assert an.stats().jitter_s == pytest.approx(j, abs=1e-12)


def test_harmonic_fps_by_hand() -> None:
    d = np.array([0.040, 0.040, 0.120])
    assert harmonic_fps(d) == pytest.approx(0.2 / (0.0016 * 2 + 0.0144))  # 11.36 fps
    an = feed([40.0, 40.0, 120.0], nominal_fps=25)
    assert an.stats().harmonic_fps == pytest.approx(11.3636, abs=1e-3)
    assert an.stats().interframe_delay_variance_s2 == pytest.approx(np.var(d))


def test_duplicates_are_unchanged_pictures() -> None:
    an = VideoTimingAnalyzer(nominal_fps=25)
    g = np.zeros((4, 4), np.float32)
    g2 = g.copy()
    g2[1, 2] = 2.0
    for i, grid in enumerate([g, g + 0.3, g2, g2, g2 + 0.1]):
        an.add_frame(i * 0.04, grid=grid)
    assert an.stats().duplicated == 3  # +0.3 everywhere, the exact repeat, +0.1


def test_time_going_backwards_is_rejected() -> None:
    an = VideoTimingAnalyzer(nominal_fps=25)
    an.add_frame(1.0)
    with pytest.raises(ValueError, match="backwards"):
        an.add_frame(0.5)
