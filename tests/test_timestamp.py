"""The monitor's side of the timestamp method, against known transits and a sender clock that is
off by seconds; the timing-mark format and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from syncmon.analysis.session import SyncAnalyzer
from syncmon.analysis.timestamp import MAX_PENDING, TimestampEstimate, TimestampOffsetEstimator
from syncmon.marks import ENV_LEN_S, MarkError, TimingMark, envelope
from syncmon.reference.speech import synth_phrase

SR = 16000
FPS = 25


def scenario(
    est: TimestampOffsetEstimator | SyncAnalyzer,
    *,
    transit_v: float,
    transit_a: float,
    skew: float,
    clock_shift: float,
    utterances: int = 4,
    early_s: float = 0.0,
) -> list[TimestampEstimate]:
    """Sender audio with utterances; the receiver gets it ``transit_a`` later and the frames
    ``transit_v`` later (monitor clock); sender times are read on a clock ``clock_shift`` off.
    ``early_s``: the marks give only the earliest leave, this much before the true one (their
    skew that much larger, ``exact: false``). Returns the estimates a
    ``TimestampOffsetEstimator`` gave (none for an analyzer)."""
    got: list[TimestampEstimate] = []
    rng = np.random.default_rng(4)
    audio = [np.zeros(SR // 2, dtype=np.float32)]
    starts = []
    pos = SR // 2
    for _ in range(utterances):
        ph = synth_phrase(rng, SR).astype(np.float32)
        starts.append(pos)
        audio += [ph, np.zeros(SR // 2, dtype=np.float32)]
        pos += ph.size + SR // 2
    x = np.concatenate(audio)
    dur = x.size / SR
    send0 = 1000.0  # the sender's true time of sample 0
    marks = []
    for i, s in enumerate(starts):
        s_a = send0 + s / SR
        frame_id = int(round((s_a + skew - send0) * FPS))
        env = envelope(x[s : s + int(ENV_LEN_S * SR)], SR)
        marks.append(
            TimingMark(
                seq=i + 1,
                t_audio_us=int(round((s_a - early_s + clock_shift) * 1e6)),
                skew_us=int(round((skew + early_s) * 1e6)),
                frame_id=frame_id,
                env=tuple(float(v) for v in env),
                exact=early_s == 0.0,
            )
        )
    fed_audio = fed_marks = 0
    chunk = SR // 20  # the monitor's 50 ms audio frames
    luma = np.full((90, 160), 100, np.uint8)
    for k in range(int(dur * FPS)):
        s_v = send0 + k / FPS
        if isinstance(est, SyncAnalyzer):
            est.add_video(s_v + transit_v, luma, frame_id=k, sender_time=s_v + clock_shift)
        else:
            est.add_video(s_v + transit_v, k, s_v + clock_shift)
        while fed_audio * chunk < min(x.size, (k + 1) * SR // FPS):
            seg = x[fed_audio * chunk : (fed_audio + 1) * chunk]
            got += est.add_audio(seg, send0 + fed_audio * chunk / SR + transit_a) or []
            fed_audio += 1
        # a mark is sent once its utterance has started (data arrives before the audio)
        while fed_marks < len(marks) and marks[fed_marks].t_audio_us / 1e6 - clock_shift < s_v:
            got += est.add_mark(marks[fed_marks]) or []
            fed_marks += 1
    return got


@pytest.mark.parametrize(
    ("transit_v", "transit_a", "skew", "shift"),
    [(0.080, 0.060, 0.040, 3.0), (0.050, 0.120, -0.030, -7.5), (0.200, 0.200, 0.0, 0.0)],
)
def test_offset_is_transit_difference_plus_skew_whatever_the_sender_clock(
    transit_v: float, transit_a: float, skew: float, shift: float
) -> None:
    est = TimestampOffsetEstimator(SR)
    got = scenario(est, transit_v=transit_v, transit_a=transit_a, skew=skew, clock_shift=shift)
    assert len(got) == 4, got
    truth = transit_v - transit_a + skew
    for e in got:
        assert e.offset_s == pytest.approx(truth, abs=0.0015)
        assert e.correlation > 0.95


@pytest.mark.parametrize("ticks", [1, 3, 10])
def test_a_mark_with_only_the_earliest_leave_gives_the_offset_an_exact_one_does(
    ticks: int,
) -> None:
    """A busy sender's mark after a chunk late for its tick: its audio left ``ticks`` ticks
    after the earliest leave it gives (the source ran dry), and its skew is that much too
    large. The offset is the received picture minus the received audio of the same instant:
    the leave cancels, and the estimate is the exact mark's."""
    exact = scenario(
        TimestampOffsetEstimator(SR), transit_v=0.08, transit_a=0.06, skew=0.04, clock_shift=3.0
    )
    early = scenario(
        TimestampOffsetEstimator(SR),
        transit_v=0.08,
        transit_a=0.06,
        skew=0.04,
        clock_shift=3.0,
        early_s=0.01 * ticks,
    )
    assert len(early) == len(exact) == 4
    for e, x in zip(early, exact, strict=True):
        assert e.offset_s == pytest.approx(x.offset_s, abs=1e-4)
        assert e.offset_s == pytest.approx(0.08 - 0.06 + 0.04, abs=0.0015)
        assert not e.skew_exact and x.skew_exact
        # what the bench judges such estimates by: less the skew bound, the transport less
        # whole ticks
        assert e.offset_s - e.skew_s == pytest.approx(0.02 - 0.01 * ticks, abs=0.0015)


def test_analyzer_reports_timestamp_offset_less_receiver_bias() -> None:
    an = SyncAnalyzer(audio_rate=SR)
    an.receiver_bias_s = 0.010
    scenario(an, transit_v=0.090, transit_a=0.050, skew=0.020, clock_shift=2.0)
    rep = an.report()
    assert rep["timestamp_estimates"] == 4
    assert rep["offset_ms"]["timestamp"] == pytest.approx(90 - 50 + 20 - 10, abs=1.5)
    assert rep["sender_skew_ms"] == pytest.approx(20.0, abs=0.1)


def test_an_estimate_whose_sender_knew_only_the_earliest_leave_reports_no_sender_skew() -> None:
    """The offset does not depend on the sender's leave time (it cancels between the
    transits): published as ever; the sender skew it carried is only a bound, not reported."""
    from syncmon.analysis.timestamp import TimestampEstimate

    a = SyncAnalyzer()
    a.receiver_bias_s = 0.0
    common = {"correlation": 0.97, "transit_v_s": 0.1, "transit_a_s": 0.06, "skew_s": 0.04}
    a._timestamp_estimates([TimestampEstimate(t=1.0, offset_s=0.08, **common)])
    assert a.report()["sender_skew_ms"] == pytest.approx(40.0)
    a._timestamp_estimates([TimestampEstimate(t=2.0, offset_s=0.07, skew_exact=False, **common)])
    rep = a.report()
    assert rep["offset_ms"]["timestamp"] == pytest.approx(70.0)
    assert rep["sender_skew_ms"] is None and rep["timestamp_estimates"] == 2


def test_no_estimate_while_the_receiver_bias_is_unknown() -> None:
    # a live monitor before its first stats window
    an = SyncAnalyzer(audio_rate=SR, live_receiver=True)
    scenario(an, transit_v=0.090, transit_a=0.050, skew=0.0, clock_shift=0.0, utterances=2)
    assert an.report()["offset_ms"]["timestamp"] is None


def _mark(**fields: str) -> bytes:
    """A mark's JSON with some fields given as raw JSON text."""
    raw = {"seq": "1", "t_audio_us": "1000", "skew_us": "0", "frame_id": "5"}
    raw["env"] = "[" + ",".join(["0.1"] * 160) + "]"
    raw.update(fields)
    return ("{" + '"v":1,' + ",".join(f'"{k}":{v}' for k, v in raw.items()) + "}").encode()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 9}', "version 9"),
        (b'{"v": 1, "seq": 1}', "envelope must be a list"),
        (
            b'{"v":1,"seq":1,"t_audio_us":1,"skew_us":0,"frame_id":1,"env":[0.1]}',
            "list of 8",
        ),
        (b"x" * 9000, "exceeds"),
        # numbers a participant can send that overflowed or poisoned the estimator before
        (_mark(seq="1e999"), "'seq' is not an integer"),
        (_mark(t_audio_us="1" + "0" * 400), "'t_audio_us' is outside"),
        (_mark(t_audio_us="1e400"), "'t_audio_us' is not an integer"),
        (_mark(skew_us="60000000"), "'skew_us' is outside"),
        (_mark(frame_id="-1"), "'frame_id' is outside"),
        (_mark(frame_id="true"), "'frame_id' is missing or not a number"),
        (_mark(seq='"7"'), "'seq' is missing or not a number"),
        (_mark(env="[" + ",".join(["0.1"] * 7 + ["NaN"]) + "]"), "outside \\[0, 2.0\\]"),
        (_mark(env="[" + ",".join(["1e300"] * 10) + "]"), "outside"),
        (_mark(env="[" + ",".join(["0.1"] * 400) + "]"), "list of 8"),
    ],
)
def test_malformed_marks_are_refused_with_what_was_wrong(payload: bytes, message: str) -> None:
    with pytest.raises(MarkError, match=message):
        TimingMark.decode(payload)


def test_mark_round_trip() -> None:
    m = TimingMark(seq=3, t_audio_us=12345678, skew_us=-4000, frame_id=77, env=(0.1,) * 160)
    assert TimingMark.decode(m.encode()) == m


@pytest.mark.parametrize(("gap_at_ms", "gap_ms"), [(None, 0), (250, 10), (120, 10), (300, 5)])
def test_match_tells_audio_that_did_not_play_out_as_sent(
    gap_at_ms: int | None, gap_ms: int
) -> None:
    """An underrun at the sender (or concealment at the receiver) puts a gap inside the
    utterance's first 400 ms: the whole template then matches between the audio before and
    after it, and its two halves match ``gap`` apart (the estimate is withheld)."""
    from syncmon.analysis.timestamp import SPLIT_MAX_S, EnvelopeTrack

    rng = np.random.default_rng(11)
    ph = synth_phrase(rng, SR).astype(np.float32)
    tmpl = envelope(ph[: int(ENV_LEN_S * SR)], SR)
    x = ph.copy()
    if gap_at_ms is not None:
        at = gap_at_ms * SR // 1000
        x = np.concatenate([x[:at], np.zeros(gap_ms * SR // 1000, np.float32), x[at:]])
    track = EnvelopeTrack(SR)
    t0 = 50.0
    audio = np.concatenate([np.zeros(SR // 2, np.float32), x, np.zeros(SR, np.float32)])
    for k in range(0, audio.size, SR // 20):
        track.add(audio[k : k + SR // 20], t0 + k / SR)
    # (a search narrow enough that this phrase's own near-repeat 400 ms on is not in it: see
    # test_a_template_that_matches_two_places_is_no_match)
    m = track.match(tmpl, t0 + 0.5 + 0.1, 0.3)
    assert isinstance(m, tuple) and m.corr > 0.9
    if gap_at_ms is None:
        assert abs(m.t - (t0 + 0.5)) <= 0.0005 and abs(m.split_s) <= 0.0005
    else:
        assert m.split_s == pytest.approx(gap_ms / 1000, abs=0.003)
        assert abs(m.split_s) > SPLIT_MAX_S


def test_a_mark_that_knows_only_the_earliest_leave_says_so() -> None:
    m = TimingMark(seq=3, t_audio_us=5, skew_us=40_000, frame_id=9, env=(0.1,) * 8, exact=False)
    assert b'"exact":false' in m.encode()
    assert TimingMark.decode(m.encode()) == m
    exact = TimingMark(seq=3, t_audio_us=5, skew_us=40_000, frame_id=9, env=(0.1,) * 8)
    assert b"exact" not in exact.encode()  # (what monitors before it read)
    assert TimingMark.decode(exact.encode()).exact is True
    bad = exact.encode().replace(b'"v":1', b'"v":1,"exact":"no"')
    with pytest.raises(MarkError, match="exact"):
        TimingMark.decode(bad)


def test_a_template_that_matches_two_places_is_no_match() -> None:
    """Audio that repeats itself within the search (here: the same 400 ms twice, 100 ms of
    silence apart) has no single place: no match, rather than the wrong one of two."""
    from syncmon.analysis.timestamp import EnvelopeTrack

    rng = np.random.default_rng(3)
    ph = synth_phrase(rng, SR).astype(np.float32)
    part = ph[: int(ENV_LEN_S * SR)]
    tmpl = envelope(part, SR)
    track = EnvelopeTrack(SR)
    t0 = 20.0
    gap = np.zeros(int(0.1 * SR), np.float32)
    audio = np.concatenate(
        [np.zeros(SR // 2, np.float32), part, gap, part, np.zeros(SR, np.float32)]
    )
    for k in range(0, audio.size, SR // 20):
        track.add(audio[k : k + SR // 20], t0 + k / SR)
    assert track.match(tmpl, t0 + 0.5 + 0.1, 0.5) is False
    # the same template with one copy: matched where it is
    track = EnvelopeTrack(SR)
    audio = np.concatenate([np.zeros(SR // 2, np.float32), part, np.zeros(2 * SR, np.float32)])
    for k in range(0, audio.size, SR // 20):
        track.add(audio[k : k + SR // 20], t0 + k / SR)
    m = track.match(tmpl, t0 + 0.5 + 0.1, 0.5)
    assert isinstance(m, tuple) and abs(m.t - (t0 + 0.5)) <= 0.0005


def test_analyzer_withholds_an_estimate_whose_audio_was_not_continuous() -> None:
    from syncmon.analysis.timestamp import TimestampEstimate

    a = SyncAnalyzer()
    a.receiver_bias_s = 0.0
    common = {"correlation": 0.97, "transit_v_s": 0.1, "transit_a_s": 0.06, "skew_s": 0.04}
    a._timestamp_estimates([TimestampEstimate(t=1.0, offset_s=0.09, split_s=0.01, **common)])
    assert a.offsets["timestamp"].offset_s is None
    a._timestamp_estimates([TimestampEstimate(t=5.0, offset_s=0.08, split_s=0.001, **common)])
    assert a.offsets["timestamp"].offset_s == pytest.approx(0.08)
    rep = a.report()
    assert rep["timestamp_estimates"] == 1 and rep["timestamp_withheld"] == 1


def test_pending_marks_are_bounded_and_expire() -> None:
    """A flood of well-formed marks that never match (far-future frames) keeps at most
    ``MAX_PENDING`` waiting, gives up those older than the kept audio, and does not stop the
    real marks from matching afterwards."""
    from syncmon.analysis.timestamp import KEEP_S

    est = TimestampOffsetEstimator(SR)
    flood = [
        TimingMark(seq=i, t_audio_us=i, skew_us=0, frame_id=10**12 + i, env=(0.1,) * 160)
        for i in range(1000)
    ]
    est.add_audio(np.zeros(SR // 20, np.float32), 0.0)
    for m in flood:
        assert est.add_mark(m) == []
        assert est.pending <= MAX_PENDING
    assert est.expired == len(flood) - MAX_PENDING
    # audio going on past the age bound: the rest are given up too
    for k in range(int((KEEP_S + 1) * 20)):
        est.add_audio(np.zeros(SR // 20, np.float32), 0.05 * (k + 1))
    assert est.pending == 0 and est.expired == len(flood)
    assert est.matched == 0
    got = scenario(est, transit_v=0.08, transit_a=0.05, skew=0.0, clock_shift=0.0)
    assert len(got) == 4
