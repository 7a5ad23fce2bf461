"""The monitor's own A/V delay difference (``syncmon.analysis.receiver``): anchored once on the
jitter-buffer averages, then moved sample-exact by NetEq's stretch counters, and kept level
against a sender clock that runs at another rate.

The figures are those measured through the real livekit-server (analysis/receiver.py's
docstring): NetEq's audio delay average reads 38 ms and stays there while 6.8 ms of concealment
moves the audio it plays by 6.8 ms."""

from __future__ import annotations

import numpy as np
import pytest

from syncmon.analysis.receiver import ReceiverDelay
from syncmon.analysis.session import SyncAnalyzer
from syncmon.analysis.timestamp import TimestampEstimate

VIDEO_JB = 0.014
AUDIO_JB_STAT = 0.038  # what NetEq's jitterBufferDelay average reads, whatever moved


class Receiver:
    """Cumulative stats counters as a subscriber's inbound-rtp reports them, polled every 2 s."""

    def __init__(self) -> None:
        self.t = 0.0
        self.v = [0.0, 0]
        self.a = [0.0, 0]

    def poll(self, rd: ReceiverDelay | SyncAnalyzer, stretch_s: float, dt: float = 2.0) -> None:
        self.t += dt
        self.v[0] += VIDEO_JB * 50 * dt
        self.v[1] += int(50 * dt)
        self.a[0] += AUDIO_JB_STAT * 48000 * dt
        self.a[1] += int(48000 * dt)
        kw = {"video": (self.v[0], self.v[1]), "audio": (self.a[0], self.a[1])}
        if isinstance(rd, SyncAnalyzer):
            rd.receiver_poll(self.t, stretch_s=stretch_s, **kw)  # type: ignore[arg-type]
        else:
            rd.poll(self.t, stretch_s=stretch_s, **kw)  # type: ignore[arg-type]


def test_audio_delay_anchored_then_moved_by_exactly_what_neteq_stretched() -> None:
    rd = ReceiverDelay()
    rx = Receiver()
    rx.poll(rd, 0.0)
    assert rd.bias_s is None  # no window yet
    while rx.t < 20.0:
        rx.poll(rd, 0.020)  # what NetEq stretched at start-up, before the anchor
    assert rd.bias_s == pytest.approx(VIDEO_JB - AUDIO_JB_STAT, abs=1e-9)
    rx.poll(rd, 0.0268)  # 6.8 ms concealed between 20 and 22 s; the delay average unmoved
    rx.poll(rd, 0.0268)
    assert rd.bias_s == pytest.approx(VIDEO_JB - AUDIO_JB_STAT - 0.0068, abs=1e-9)
    assert rd.bias_at(19.0) == pytest.approx(VIDEO_JB - AUDIO_JB_STAT, abs=1e-9)
    assert rd.bias_at(23.0) == pytest.approx(VIDEO_JB - AUDIO_JB_STAT - 0.0068, abs=1e-9)
    # what the content offset takes (it averages over its own 8 s window): the step comes in
    # as gradually as into that window, all of it once the window is past it
    b0 = VIDEO_JB - AUDIO_JB_STAT
    assert b0 - 0.0068 < rd.window_bias_s < b0  # type: ignore[operator]
    why = rd.bias_at(21.0)
    assert isinstance(why, str) and "stretched the audio by 6.8 ms" in why
    assert rd.bias_at(24.5) is None  # after the last poll: wait for the next
    for _ in range(4):
        rx.poll(rd, 0.0268)
    assert rd.window_bias_s == pytest.approx(b0 - 0.0068, abs=1e-9)


def test_no_anchor_while_neteq_keeps_stretching_and_a_new_stream_starts_afresh() -> None:
    rd = ReceiverDelay()
    rx = Receiver()
    for i in range(10):
        rx.poll(rd, 0.003 * i)  # re-adapting: every window moved
    # no anchor: no bias for timestamp estimates; the averages as they read for content
    assert rd.audio_delay_s is None and isinstance(rd.bias_at(rx.t - 1.0), str)
    assert rd.bias_s == pytest.approx(VIDEO_JB - AUDIO_JB_STAT, abs=1e-9)
    for _ in range(5):
        rx.poll(rd, 0.03)
    assert rd.bias_s is not None
    rd.reset("audio")
    rx.poll(rd, 0.03)
    assert rd.bias_s is None and rd.audio_delay_s is None


def drive_with_clock_rate(eps: float, wander_s: float, until_s: float) -> tuple[np.ndarray, int]:
    """A sender clock ``eps`` slow against the monitor's: NetEq inserts 5 ms whenever its
    buffer ran 5 ms low, and the video transit (receiver minus sender time) climbs ``eps`` s/s,
    plus a slow wander of the video path's own delay (``wander_s`` peak, 70 s period) that
    its jitter buffer does not show. The receiver's real audio delay then saws between its
    level and 5 ms below it. Returns (time, transit_v - transit_a - bias) per estimate and
    how many were withheld for a stretch; the truth is a constant."""
    d_a0 = 0.030  # the real audio delay at the start (the stat reads 38: off by a constant)
    rd = ReceiverDelay()
    rx = Receiver()

    def stretch(t: float) -> float:
        return 0.005 * float(np.floor(eps * t / 0.005))

    errors: list[tuple[float, float]] = []
    withheld = 0
    next_est = 3.0
    while rx.t < until_s:
        rx.poll(rd, stretch(rx.t + 2.0))
        while next_est <= rx.t:
            t = next_est
            wander = wander_s * np.sin(2 * np.pi * t / 70.0)
            transit_v = 3.0 + VIDEO_JB + wander + eps * t  # sender clock 3 s ahead, slower
            transit_a = 3.0 + d_a0 + stretch(t) - eps * t + wander + eps * t
            rd.add_transit(t, transit_v)
            b = rd.bias_at(t)
            if isinstance(b, float):
                errors.append((t, transit_v - transit_a - b))
            elif b is not None and "stretched" in b:
                withheld += 1
            next_est += 4.0
    return np.array(errors), withheld


def test_bias_level_against_a_sender_clock_50_ppm_slow() -> None:
    eps = 50e-6
    err, withheld = drive_with_clock_rate(eps, 0.003, 1200.0)
    # the anchor's own error: the stat reads 38 ms for a real 30 (less the drift by the time
    # its window was full), the same ever after once the rate is known (from 300 s of video)
    late = err[err[:, 0] >= 310.0]
    constant = late[0, 1]
    assert constant == pytest.approx(AUDIO_JB_STAT - 0.030, abs=0.001)
    # (the rate read from a video path that wanders by 3 ms is off by a few ppm)
    assert np.max(np.abs(late[:, 1] - constant)) <= 0.001, late
    # before that the audio delay drifts by eps per second, no more
    assert np.max(np.abs(err[:, 1] - constant)) <= eps * 310.0
    assert withheld <= 12  # estimates right at NetEq's 12 inserts (every 100 s), no more


def test_no_clock_rate_made_up_from_the_video_paths_own_wander() -> None:
    """One host (no rate): a video path whose delay wanders by 3 ms must not read as a clock
    rate, which would walk the audio delay away from the truth over a long call."""
    err, _ = drive_with_clock_rate(0.0, 0.003, 1200.0)
    assert np.max(np.abs(err[:, 1] - err[0, 1])) <= 1e-9


def test_analyzer_publishes_each_timestamp_estimate_with_the_bias_at_its_instant() -> None:
    a = SyncAnalyzer()
    rx = Receiver()
    for _ in range(6):
        rx.poll(a, 0.0)
    bias0 = VIDEO_JB - AUDIO_JB_STAT

    def est(t: float) -> TimestampEstimate:
        return TimestampEstimate(
            t=t, offset_s=0.05, correlation=0.99, transit_v_s=0.1, transit_a_s=0.06, skew_s=0.0
        )

    a._timestamp_estimates([est(12.5)])  # after the last poll (12 s): it waits
    assert a.report()["timestamp_estimates"] == 0
    rx.poll(a, 0.0)
    assert a.offsets["timestamp"].offset_s == pytest.approx(0.05 - bias0, abs=1e-9)
    a._timestamp_estimates([est(14.5)])
    rx.poll(a, 0.013)  # NetEq concealed 13 ms between 14 and 16 s: no bias for 14.5 s
    a._timestamp_estimates([est(16.5)])
    rx.poll(a, 0.013)
    assert a.offsets["timestamp"].offset_s == pytest.approx(0.05 - bias0 + 0.013, abs=1e-9)
    rep = a.report()
    assert rep["timestamp_estimates"] == 2 and rep["timestamp_withheld"] == 1
