"""The instrumented sender's audio tap (``syncmon.instrument._leave``): where each utterance's
first audio really left, from arrivals that come late by a random delay, with the source silent
between utterances; and the monitor's hold-off while NetEq stretches the audio."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from syncmon.analysis.session import SyncAnalyzer
from syncmon.instrument._leave import TAP_FRAME_MS, TAP_RATE, AudioLeaveTap
from syncmon.live.avatar import BIAS_WINDOW_S, AvatarMonitor
from syncmon.marks import ENV_LEN_S, envelope
from syncmon.metrics import AvatarState
from syncmon.reference.speech import synth_phrase

TICK_PHASE = 0.0037  # the source's 10 ms timer runs at this phase of the sender clock


def feed(tap: AudioLeaveTap, seed: int, check: Callable[[float, np.ndarray], None]) -> float:
    """Five utterances 0.2-1.2 s apart, delivered in 50 ms chunks whose arrivals are late by
    0.1-3 ms mostly and up to 25 ms sometimes; ``check(true leave time, audio)`` after each.
    Returns when the last audio left."""
    rng = np.random.default_rng(seed)
    n = TAP_RATE * TAP_FRAME_MS // 1000
    t = 100.0 + TICK_PHASE
    for _ in range(5):
        ph = synth_phrase(rng, TAP_RATE).astype(np.float32)
        ph = np.concatenate([ph, np.zeros(-ph.size % n, np.float32)])
        for i in range(0, ph.size, n):
            end = t + (i + n) / TAP_RATE
            late = rng.uniform(0.0001, 0.003) if rng.random() < 0.8 else rng.uniform(0.003, 0.025)
            tap.add(ph[i : i + n], end + late)
        check(t, ph)
        t += ph.size / TAP_RATE + round(rng.uniform(0.2, 1.2), 2)  # silence: nothing leaves
    return t


def template(ph: np.ndarray) -> np.ndarray:
    return envelope(ph[: int(ENV_LEN_S * TAP_RATE)], TAP_RATE)


def test_tap_finds_each_utterance_where_it_left_within_a_millisecond() -> None:
    errors: list[float] = []
    for seed in (1, 2, 3):
        tap = AudioLeaveTap(track=None, clock=lambda: 0.0)

        def check(
            t_true: float, ph: np.ndarray, tap: AudioLeaveTap = tap, seed: int = seed
        ) -> None:
            # the estimate the tracker starts from: early by a timer step, late, or far off
            for guess in (t_true - 0.007, t_true + 0.004, t_true - 0.3):
                res = tap.find(template(ph), guess)
                assert isinstance(res, tuple), (seed, t_true, guess, res)
                assert res[1] > 0.95
                errors.append(res[0] - t_true)

        feed(tap, seed, check)
    assert len(errors) == 45
    assert max(abs(e) for e in errors) <= 0.001, errors


def test_tap_waits_for_audio_that_has_not_left() -> None:
    tap = AudioLeaveTap(track=None, clock=lambda: 0.0)
    first: list[np.ndarray] = []
    end = feed(tap, 5, lambda t, ph: first.append(ph))
    assert tap.find(template(first[-1]), end + 2.0) is None


def stats(ins: int, rem: int, conc: int) -> SimpleNamespace:
    return SimpleNamespace(
        inserted_samples_for_deceleration=ins,
        removed_samples_for_acceleration=rem,
        concealed_samples=conc,
        total_samples_received=480000,
        total_samples_duration=10.0,
    )


def test_monitor_holds_timestamp_while_neteq_stretches_the_audio() -> None:
    mon = AvatarMonitor(AvatarState("r", "p", SyncAnalyzer()))
    t = 0.0
    for _ in range(6):
        mon._stretched(t, stats(0, 0, 960))
        t += 2.0
    assert mon._audio_unstretched()
    mon._stretched(t, stats(0, 0, 960 + 624))  # 13 ms concealed: the audio moved
    assert not mon._audio_unstretched()
    # steady again once the bias window holds only what came after
    while t < 12.0 + BIAS_WINDOW_S + 2.0:
        t += 2.0
        mon._stretched(t, stats(0, 0, 960 + 624))
    assert mon._audio_unstretched()
    # removed samples undo inserted ones only in the net: both moved the audio meanwhile
    mon._stretched(t + 2, stats(480, 0, 1584))
    mon._stretched(t + 4, stats(480, 480, 1584))
    assert not mon._audio_unstretched()


def test_analyzer_withholds_and_counts_unsteady_timestamp_estimates() -> None:
    from syncmon.analysis.timestamp import TimestampEstimate

    a = SyncAnalyzer()
    est = TimestampEstimate(
        t=1.0, offset_s=0.05, correlation=0.99, transit_v_s=0.1, transit_a_s=0.06, skew_s=0.04
    )
    a.receiver_bias_s = -0.01
    a.receiver_steady = False
    a._timestamp_estimates([est])
    assert a.offsets.get("timestamp") is None or a.offsets["timestamp"].offset_s is None
    a.receiver_steady = True
    a._timestamp_estimates([est])
    assert abs(a.offsets["timestamp"].offset_s - 0.06) < 1e-9
    rep = a.report()
    assert rep["timestamp_estimates"] == 1 and rep["timestamp_withheld"] == 1
