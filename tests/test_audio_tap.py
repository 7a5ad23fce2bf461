"""The instrumented sender's audio tap (``syncmon.instrument._leave``): where each utterance's
first audio really left, from arrivals that come late by a random delay, with the source silent
between utterances."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from syncmon.instrument._leave import TAP_FRAME_MS, TAP_RATE, AudioLeaveTap
from syncmon.instrument._schedule import TICK_S
from syncmon.marks import ENV_LEN_S, envelope
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


def stretches(
    tap: AudioLeaveTap, seed: int, phase: float | None, busy_share: float, count: int = 12
) -> None:
    """``count`` stretches of audio in 50 ms chunks; each starts on a tick of a 10 ms timer at
    ``phase`` (None: no timer, anywhere). A chunk's arrival is late by 0.05-0.6 ms, or, for
    ``busy_share`` of them (a busy host's loop), by anything up to 20 ms."""
    rng = np.random.default_rng(seed)
    n = TAP_RATE * TAP_FRAME_MS // 1000
    t = 100.0 + (phase or 0.0)
    for _ in range(count):
        x = (0.1 * rng.standard_normal(n * int(rng.integers(8, 30)))).astype(np.float32)
        for i in range(0, x.size, n):
            busy = rng.random() < busy_share
            late = rng.uniform(0.0006, 0.02) if busy else rng.gamma(3.0, 0.0001) + 0.00005
            tap.add(x[i : i + n], t + (i + n) / TAP_RATE + late)
        gap = rng.uniform(0.2, 1.2)
        t += x.size / TAP_RATE + (round(gap, 2) if phase is not None else gap)


@pytest.mark.parametrize("phase", [0.0037, 0.0001, 0.0098])
@pytest.mark.parametrize("busy_share", [0.0, 0.2, 0.4])
def test_tap_learns_the_timer_phase_through_a_busy_hosts_late_chunks(
    phase: float, busy_share: float
) -> None:
    """A busy host delivers a third of the chunks late by anything (one measured run with both
    cores busy: 29-41 %); the phase is still the pile's leading edge, not the background's."""
    for seed in (1, 2):
        tap = AudioLeaveTap(track=None, clock=lambda: 0.0)
        stretches(tap, seed, phase, busy_share)
        got = tap.timer_phase()
        assert got is not None, (seed, tap.phase_hits)
        d = (got - phase + TICK_S / 2) % TICK_S - TICK_S / 2
        assert abs(d) <= 0.0003, (seed, 1e3 * d)


def test_tap_knows_no_phase_when_stretches_start_anywhere() -> None:
    for seed in (1, 2, 3):
        tap = AudioLeaveTap(track=None, clock=lambda: 0.0)
        stretches(tap, seed, None, 0.2, count=20)
        assert tap.chunks >= 200
        assert tap.timer_phase() is None, (seed, tap.phase_hits)
