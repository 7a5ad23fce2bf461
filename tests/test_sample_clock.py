"""``SampleClock``: a receiver-side clock for audio that arrives without timestamps, against a
known truth -- chunks produced on a fixed 10 ms timer and delivered late by a random delay,
including the pattern seen live under load: the SDK's playout timer starves for half a second
and then catches up in a burst."""

from __future__ import annotations

import numpy as np

from syncmon.analysis.clock import SampleClock

SR = 16000
CHUNK = SR // 20  # 50 ms frames, as the monitor asks for


def test_stamps_follow_the_producer_through_late_arrivals_and_a_starved_burst() -> None:
    rng = np.random.default_rng(7)
    clock = SampleClock(SR)
    t0 = 500.0  # true time of sample 0
    errors_before, errors_after = [], []
    for k in range(400):  # 20 s
        true_start = t0 + k * CHUNK / SR
        done = true_start + CHUNK / SR
        if 200 <= k < 210:
            # chunks 200-209 are produced while the timer starves and delivered together at
            # the end of the stall (+0.5 s), then the stream goes on on time
            arrival = t0 + 210 * CHUNK / SR + 0.001 * (k - 200) / 10
        else:
            arrival = done + (rng.uniform(0.0, 0.002) if rng.random() < 0.9 else 0.02)
        start = clock.chunk(arrival, CHUNK)
        if k < 200:
            errors_before.append(start - true_start)
        elif k >= 212:
            errors_after.append(start - true_start)
    assert clock.reanchors == 1  # the stall re-anchored the clock, the burst pulled it back
    # before: within the smallest lateness; after the burst: back on the producer's timeline
    assert max(abs(e) for e in errors_before[5:]) <= 0.001
    assert max(abs(e) for e in errors_after) <= 0.001, max(abs(e) for e in errors_after)


def test_a_stream_that_stops_and_restarts_is_reanchored_on_its_new_timeline() -> None:
    clock = SampleClock(SR)
    for k in range(40):
        clock.chunk(100.0 + (k + 1) * CHUNK / SR + 0.0005, CHUNK)
    # 3 s of nothing, then the stream resumes 3 s later (not a burst: a new talk)
    base = 100.0 + 40 * CHUNK / SR + 3.0
    starts = [clock.chunk(base + (k + 1) * CHUNK / SR + 0.0005, CHUNK) for k in range(40)]
    assert clock.reanchors == 1
    assert max(abs(s - (base + k * CHUNK / SR)) for k, s in enumerate(starts)) <= 0.001
