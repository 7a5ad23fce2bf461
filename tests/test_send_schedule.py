"""When an utterance's audio left livekit's audio source (``instrument._schedule``): the
arithmetic on constructed captures, then the real source run dry in the middle of an utterance,
checked against a tap on its track."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import numpy as np
import pytest
from livekit import rtc

from syncmon.instrument._leave import TAP_FRAME_MS, AudioLeaveTap
from syncmon.instrument._schedule import CAPTURE_GUARD_S, TICK_S, SendSchedule
from syncmon.marks import ENV_LEN_S, envelope
from syncmon.reference.speech import synth_phrase

# The tap's reading of a leave on this shared loop comes late by up to ~2.2 ms on a busy CI
# host; under half a tick it still snaps to the right tick of the timer's grid, which is all the
# tracker takes from it (a reading further off than PHASE_SPREAD_S it does not take at all).
TAP_READ_LATE_S = 0.004

# a real audio source's 10 ms timer, timed against a tap to 2 ms: run alone (scripts/test.sh)
pytestmark = pytest.mark.serial

PHASE = 0.0037
T0 = 100.0 + PHASE  # a tick


def in_time(sched: SendSchedule, n: int, chunk: float, lead: float, base: float = T0) -> None:
    """``n`` chunks, each in the buffer ``lead`` before the tick that sends its first block."""
    for _ in range(n):
        k = np.floor(sched.captured_s / TICK_S + 1e-6)
        due = base + (k + 1) * TICK_S
        sched.add(chunk, due - lead - 0.0004, due - lead)


def test_chunks_in_time_leave_one_per_sample_period_from_the_first_tick() -> None:
    sched = SendSchedule(PHASE)
    # the first 40 ms go in 3 ms after a tick: they leave on the next (timed at the block's
    # start: the tick they went in after)
    sched.add(0.04, T0 + 0.003, T0 + 0.0035)
    in_time(sched, 20, 0.04, lead=0.004)
    assert sched.base == pytest.approx(T0)
    assert sched.leave(0.0) == pytest.approx(T0)
    assert sched.leave(0.5123) == pytest.approx(T0 + 0.5123)
    assert sched.estimate(0.5123) == (pytest.approx(T0 + 0.5123), 0.0)  # known: no uncertainty
    assert sched.in_time(0.0, 0.42) is True
    assert sched.in_time(0.3, 0.9) is None  # not all of it has gone in
    assert sched.leave(0.9) is None


def test_audio_queued_ahead_of_the_utterance_delays_its_first_tick() -> None:
    # 25 ms queued (the SDK's continuous estimate): two whole blocks and a half, rounded with
    # the time since the last tick to the ticks that drain it
    sched = SendSchedule(PHASE, queued_ahead_s=0.025)
    sched.add(0.04, T0 + 0.006, T0 + 0.0065)
    assert sched.base == pytest.approx(T0 + 0.03)


def test_a_first_capture_across_a_tick_is_not_placed() -> None:
    sched = SendSchedule(PHASE)
    sched.add(0.04, T0 + 0.008, T0 + 0.0115)  # the tick at T0 + 10 ms fell while it went in
    assert sched.base is None and sched.leave(0.02) is None
    assert sched.in_time(0.0, 0.04) is False
    sched.set_base(T0 + 0.01)  # measured on the tap
    assert sched.leave(0.02) == pytest.approx(T0 + 0.03)


@pytest.mark.parametrize("lateness", [0.0005, 0.0235])
def test_after_a_chunk_late_for_its_tick_the_leave_is_not_known(lateness: float) -> None:
    """Confirmed just after its tick, or called well after it: the source may have run dry
    (the rest left a tick or more later) or its timer's task may have run late and taken it
    after all. Not known -- but a later stretch whose chunks all came in time for their
    earliest ticks did leave in one piece, no earlier than that schedule."""
    sched = SendSchedule(PHASE)
    sched.add(0.04, T0 + 0.001, T0 + 0.0015)
    in_time(sched, 9, 0.04, lead=0.003)  # 0.40 s gone in, in time
    due = T0 + 0.41  # the tick for the chunk at 0.40
    sched.add(0.04, due + lateness - 0.001, due + lateness)
    in_time(sched, 20, 0.04, lead=0.003)  # the producer back on its pace
    assert sched.leave(0.39) == pytest.approx(T0 + 0.39)
    assert sched.leave(0.4) is None and sched.leave(1.0) is None
    assert sched.in_time(0.0, 0.40) is True
    assert sched.in_time(0.1, 0.52) is False  # the late chunk is inside it
    assert sched.in_time(0.45, 0.87) is True  # a later stretch, in one piece
    assert sched.earliest(0.45) == pytest.approx(T0 + 0.45)


@pytest.mark.parametrize(("lateness", "missed"), [(0.0003, 0), (0.0007, 1), (0.0235, 3)])
def test_after_a_late_chunk_the_estimate_places_the_rest_as_a_timer_on_time_sends_it(
    lateness: float, missed: int
) -> None:
    """Called ``lateness - 1 ms`` after its tick and confirmed ``lateness`` after it: taken as
    in the buffer at the middle of the two, so it missed every tick up to that (none, one, or
    three), and all that follows leaves that many ticks later -- a tick of uncertainty either
    way (the timer may have run late and taken it). A second late chunk adds its own."""
    sched = SendSchedule(PHASE)
    sched.add(0.04, T0 + 0.001, T0 + 0.0015)
    in_time(sched, 9, 0.04, lead=0.003)
    due = T0 + 0.41
    sched.add(0.04, due + lateness - 0.001, due + lateness)
    shift = missed * TICK_S
    in_time(sched, 10, 0.04, lead=0.003, base=T0 + shift)  # in time on the later ticks
    assert sched.estimate(0.39) == (pytest.approx(T0 + 0.39), 0.0)
    for at in (0.4, 0.43, 0.8):
        assert sched.leave(at) is None
        assert sched.estimate(at) == (pytest.approx(T0 + shift + at), pytest.approx(TICK_S))
    # a chunk 12 ms late on the shifted schedule: two more ticks, two ticks of uncertainty
    at2 = sched.captured_s
    due2 = T0 + shift + at2 + TICK_S
    sched.add(0.04, due2 + 0.0115, due2 + 0.0125)
    in_time(sched, 5, 0.04, lead=0.003, base=T0 + shift + 0.02)
    before, after = at2 - 0.005, at2 + 0.05
    assert sched.estimate(before) == (pytest.approx(T0 + shift + before), pytest.approx(TICK_S))
    assert sched.estimate(after) == (
        pytest.approx(T0 + shift + 0.02 + after),
        pytest.approx(2 * TICK_S),
    )
    assert sched.estimate(sched.captured_s) is None  # not gone in yet
    assert SendSchedule(None).estimate(0.0) is None  # no timer phase: no schedule


def test_chunks_not_a_multiple_of_the_tick_are_due_with_the_block_they_complete() -> None:
    """At 30 fps a frame's audio is 33.3 ms: the chunk at 33.3 ms completes the block that
    started at 30 ms, due on the tick at 40 ms -- not at 33.3 + 10 ms."""
    sched = SendSchedule(PHASE)
    sched.add(1 / 30, T0 + 0.001, T0 + 0.0015)
    # confirmed at 39.9 ms: after the block's tick (less the guard), before 43.3 ms
    sched.add(1 / 30, T0 + 0.0365, T0 + 0.0399)
    assert sched.leave(0.029) == pytest.approx(T0 + 0.029)
    assert sched.leave(0.03) is None
    assert sched.in_time(0.0, 0.03) is True
    assert sched.in_time(0.0, 0.034) is False


@pytest.mark.parametrize("since", [0.0001, 0.0098])
def test_a_first_capture_right_at_a_tick_is_not_placed(since: float) -> None:
    """Just after a tick (which may not have fired yet) or just before one (which may fire a
    little early): which tick takes it is not known."""
    sched = SendSchedule(PHASE)
    sched.add(0.04, T0 + since, T0 + since + 0.0001)
    assert sched.base is None


def test_a_capture_just_inside_the_guard_is_in_time() -> None:
    sched = SendSchedule(PHASE)
    sched.add(0.04, T0 + 0.001, T0 + 0.0015)
    sched.add(0.04, T0 + 0.03, T0 + 0.05 - CAPTURE_GUARD_S - 1e-5)
    assert sched.leave(0.05) == pytest.approx(T0 + 0.05)


def test_an_utterance_longer_than_is_followed_is_not_known_past_that() -> None:
    from syncmon.instrument._schedule import MAX_CAPTURES

    sched = SendSchedule(PHASE)
    sched.add(0.04, T0 + 0.001, T0 + 0.0015)
    in_time(sched, MAX_CAPTURES + 10, 0.04, lead=0.003)
    end = MAX_CAPTURES * 0.04
    assert sched.leave(end - 0.01) == pytest.approx(T0 + end - 0.01)
    assert sched.leave(end + 0.01) is None
    assert sched.in_time(end - 0.1, end + 0.1) is False


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``cond`` (polled on the loop), not for a fixed time."""

    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize("hold", [0.045, 0.095])
def test_the_real_audio_source_held_up_mid_utterance(hold: float) -> None:
    """livekit's own AudioSource: 40 ms chunks go in 15 ms ahead of real time; one, a second
    into the utterance, is held back ``hold`` (the producer then catches up). The schedule (with
    the timer's phase from a tap on the track) places the utterance's start where the tap sees
    it leave; from the held chunk on it says the leave is not known, and that a stretch later
    on went out in one piece, no earlier than the tap sees it; its estimate places that stretch
    where the tap sees it, the held chunk's missed ticks counted."""
    rate = 16000
    rng = np.random.default_rng(5)
    warm = synth_phrase(rng, rate)
    speech = np.concatenate([synth_phrase(rng, rate) for _ in range(2)])
    chunk = 640
    held = 25  # the chunk at 1.0 s

    async def main() -> tuple[SendSchedule, AudioLeaveTap]:
        source = rtc.AudioSource(rate, 1, queue_size_ms=1000)
        track = rtc.LocalAudioTrack.create_audio_track("a", source)
        tap = AudioLeaveTap(track, time.monotonic, keep_s=60.0)
        tap.start()

        async def play(x: np.ndarray, sched: SendSchedule | None) -> None:
            pcm = np.clip(x * 32767, -32768, 32767).astype(np.int16)
            t0 = time.monotonic()
            for i in range(0, pcm.size - chunk + 1, chunk):
                due = t0 + i / rate - 0.015 + (hold if sched and i // chunk == held else 0.0)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                frame = rtc.AudioFrame(pcm[i : i + chunk].tobytes(), rate, 1, chunk)
                t_call = time.monotonic()
                await source.capture_frame(frame)
                if sched is not None:
                    sched.add(chunk / rate, t_call, time.monotonic())

        await play(warm, None)  # the tap learns the timer's phase
        # the warm-up has all left (the utterance starts on an empty source) and the phase is
        # known
        warm_n = warm.size // chunk * chunk
        await until(lambda: tap.chunks * TAP_FRAME_MS * rate // 1000 >= warm_n - rate // 20)
        await until(lambda: tap.timer_phase() is not None and source.queued_duration == 0.0)
        phase = tap.timer_phase()
        assert phase is not None
        sched = SendSchedule(phase, source.queued_duration)
        await play(speech, sched)
        # all of it has come out of the source through the tap (but a last partial frame)
        whole = warm_n + speech.size // chunk * chunk
        await until(lambda: tap.chunks * TAP_FRAME_MS * rate // 1000 >= whole - rate // 20)
        await tap.aclose()
        return sched, tap

    sched, tap = asyncio.run(main())
    at_held = held * chunk / rate
    tmpl = envelope(speech[: int(ENV_LEN_S * rate)], rate)
    first = sched.captures[0]
    start = sched.leave(0.0)
    res = tap.find(tmpl, first.t_call)
    assert isinstance(res, tuple), res
    if start is None:  # declined: the first chunk went in within the guard of a tick
        since = (first.t_call - sched.phase) % TICK_S if sched.phase is not None else 0.0
        near = min(since, TICK_S - since - (first.t_done - first.t_call))
        assert near < CAPTURE_GUARD_S, (since, first)
        sched.set_base(res[0])  # (as the tracker does: the start measured on the tap)
    else:
        # the tap's reading comes a little late when the loop is busy (CI: 1.5 ms): on the
        # timer's tick grid, as the tracker reads it, it is the schedule's start, tick for tick
        assert sched.phase is not None
        snapped = sched.phase + TICK_S * round((res[0] - sched.phase) / TICK_S)
        assert abs(snapped - start) < 1e-4, (res, start)
        assert abs(res[0] - start) <= TAP_READ_LATE_S, (res, start)
    assert sched.leave(at_held) is None and sched.leave(at_held + 0.5) is None
    assert sched.in_time(at_held - 0.2, at_held + 0.2) is False
    held_est = sched.estimate(at_held)
    assert held_est is not None and held_est[1] >= TICK_S
    # (on this shared loop a chunk may also come late by itself: a stretch a bit later, then)
    later = next(o for o in np.arange(at_held + 0.2, 4.0, 0.04) if sched.in_time(o, o + ENV_LEN_S))
    i = int(round(later * rate))
    res = tap.find(envelope(speech[i : i + int(ENV_LEN_S * rate)], rate), sched.earliest(later))
    earliest = sched.earliest(later)
    assert isinstance(res, tuple) and earliest is not None
    assert res[0] >= earliest - 0.001, (later, res[0] - earliest)
    # and the estimate places it where the tap sees it: the held chunk's ticks counted right,
    # off by no more than a tick for any other chunk that came in at its tick (the tick may
    # have taken it or not), plus the tap's own reading on this loop (see above)
    est = sched.estimate(later)
    missed = np.floor((hold - 0.015) / TICK_S + 1e-6) * TICK_S  # at least
    assert est is not None and est[0] - earliest >= missed - 1e-6, (est, earliest)
    # the held chunk's own ticks are counted exactly unless a tick fell while it went in: then
    # that tick may have taken it or not, its tick of uncertainty as real as the others'
    hc, phase = sched.captures[held], sched.phase
    assert phase is not None
    straddled = math.floor((hc.t_done + CAPTURE_GUARD_S - phase) / TICK_S) > math.floor(
        (hc.t_call - CAPTURE_GUARD_S - phase) / TICK_S
    )
    bound = est[1] - (0.0 if straddled else TICK_S) + TAP_READ_LATE_S
    assert abs(res[0] - est[0]) <= bound, (res[0] - est[0], est, straddled, hc)


@pytest.mark.parametrize(
    ("t_call", "t_done", "earliest", "known"),
    [
        (T0 + 0.0001, T0 + 0.0006, T0 - 0.01, False),  # a hair after a tick: it, or the next
        (T0 + 0.008, T0 + 0.0115, T0, False),  # the tick at T0 + 10 ms fell while it went in
        (T0 + 0.004, T0 + 0.005, T0, True),  # between ticks: the base itself
    ],
)
def test_the_earliest_leave_of_a_start_no_tick_can_be_told_for(
    t_call: float, t_done: float, earliest: float, known: bool
) -> None:
    """A first chunk that went in while a tick fell left on that tick or the next: the
    earliest leave is the earlier one's (a block timed at its start, a tick before the tick
    that sends it); between ticks, it is the base."""
    sched = SendSchedule(PHASE)
    sched.add(0.04, t_call, t_done)
    assert sched.earliest(0.0) == pytest.approx(earliest)
    assert sched.earliest(0.5) == pytest.approx(earliest + 0.5)
    assert (sched.base is not None) is known
    assert SendSchedule().earliest(0.0) is None  # (no phase, no bound)
