"""Content lip-sync estimator against the reference avatar's exact truth (no codec)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ANALYSIS_RATE, feed_avatar

from syncmon.analysis import (
    AnalyzerConfig,
    ContentOffsetEstimator,
    LipSyncConfig,
    SyncAnalyzer,
    luma_grid,
)
from syncmon.reference import Impairments, ReferenceAvatar


@pytest.mark.parametrize("offset_ms", [-200, -60, 0, 35, 160])
def test_offset_matches_injected_truth_without_codec(offset_ms: float) -> None:
    an = feed_avatar(ReferenceAvatar(impairments=Impairments(offset_ms=offset_ms)), 20.0)
    med = an.content_median.median_ms()
    assert an.content_median.count >= 8
    assert med is not None and abs(med - offset_ms) <= 5


def test_calibration_offset_is_subtracted() -> None:
    from syncmon.analysis import LipSyncConfig

    an = feed_avatar(
        ReferenceAvatar(impairments=Impairments(offset_ms=100)),
        14.0,
        lipsync=LipSyncConfig(calibration_s=0.060),
    )
    med = an.content_median.median_ms()
    assert med is not None and abs(med - 40) <= 5


def test_silence_gives_no_estimate() -> None:
    est = ContentOffsetEstimator(LipSyncConfig(window_s=4.0))
    av = ReferenceAvatar()
    for k in range(250):
        est.add_video(
            k * 0.04, luma_grid(av.face.render(mouth_open=0.0, scene_t=k * 0.04, slot=k).y)
        )
    t = np.arange(0, 10.0, 0.01) + 0.005
    est.add_envelope(t, np.full(t.size, 1e-5))
    r = est.estimate(9.0)
    assert r.offset_s is None and r.confidence == 0.0


def test_static_picture_gives_no_estimate() -> None:
    an = SyncAnalyzer(audio_rate=ANALYSIS_RATE)
    av = ReferenceAvatar()
    still = av.face.render(mouth_open=0.3, scene_t=0.0, slot=0).y
    sr = av.sample_rate
    for k in range(400):
        t = k * 0.04
        an.add_audio(av.audio(int(t * sr), int(0.04 * sr)).reshape(-1, 3).mean(axis=1), t)
        an.add_video(t, still)
    assert an.offsets["content"].offset_s is None
    assert an.content_median.count == 0


def test_mouth_that_does_not_follow_speech_gives_no_estimate() -> None:
    """A face talking to other audio: the picture moves, the sound is speech, no sync."""
    an = SyncAnalyzer(audio_rate=ANALYSIS_RATE)
    av = ReferenceAvatar()
    other = ReferenceAvatar(impairments=Impairments(seed=99))
    sr = av.sample_rate
    for k in range(500):
        t = k * 0.04
        an.add_audio(av.audio(int(t * sr), int(0.04 * sr)).reshape(-1, 3).mean(axis=1), t)
        m = other.speech.mouth_open(t)
        an.add_video(t, av.face.render(mouth_open=m, scene_t=t, slot=k).y)
    assert an.content_median.count <= 1


def test_luma_grid_is_cell_means() -> None:
    y = np.zeros((64, 64), np.uint8)
    y[:32, :32] = 200
    g = luma_grid(y, (2, 2))
    assert g.tolist() == [[200.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="2-D"):
        luma_grid(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("size", [(1280, 720), (640, 360), (854, 480), (1920, 1080), (33, 17)])
def test_luma_grid_cells_cover_the_whole_frame(size: tuple[int, int]) -> None:
    """Each cell (its edges at i * height / rows and j * width / cols, so the last row and
    column of cells reach the frame's edge) reads its own pixels only, whatever the rows it
    samples: a plane of constant cells gives back each cell's value exactly."""
    w, h = size
    rng = np.random.default_rng(w)
    truth = rng.integers(0, 256, (16, 16))
    rows = np.arange(h) * 16 // h  # the cell row of each pixel row: edges at floor(i * h / 16)
    cols = np.arange(w) * 16 // w
    y = truth[rows[:, None], cols[None, :]].astype(np.uint8)
    assert luma_grid(y).tolist() == truth.astype(np.float32).tolist()
    # a view with a row stride wider than the picture (a decoder's padded plane) reads the same
    padded = np.zeros((h, w + 64), np.uint8)
    padded[:, :w] = y
    assert luma_grid(padded[:, :w]).tolist() == truth.astype(np.float32).tolist()
    # the brightest plane: a cell's rows are summed in 16 bits, which must not wrap
    assert luma_grid(np.full((h, w), 255, np.uint8)).tolist() == [[255.0] * 16] * 16


@pytest.mark.parametrize("hop_s", [1.0, 2.0])
def test_estimates_come_every_hop_and_stay_on_the_truth(hop_s: float) -> None:
    """The live monitor estimates every 2 s (``--content-every``), a recording every 1 s: once
    the mouth is located the windows' ends step by the hop (to the frame), before that by 1 s
    (the reference face is located by the second window), and both land on the offset."""
    ends: list[float] = []
    offsets: list[float] = []

    def seen(method: str, est: object) -> None:
        if method == "content":
            ends.append(est.t)  # type: ignore[attr-defined]
            if est.offset_s is not None:  # type: ignore[attr-defined]
                offsets.append(est.offset_s)  # type: ignore[attr-defined]

    avatar = ReferenceAvatar(impairments=Impairments(offset_ms=-60))
    an = SyncAnalyzer(
        AnalyzerConfig(lipsync=LipSyncConfig(hop_s=hop_s)),
        audio_rate=ANALYSIS_RATE,
        on_estimate=seen,
    )
    sr, pos, seconds = avatar.sample_rate, 0, 24.0
    for f in avatar.frames(seconds):
        while pos < (f.pts + 0.6) * sr and pos < seconds * sr:
            an.add_audio(avatar.audio(pos, int(0.02 * sr)).reshape(-1, 3).mean(axis=1), pos / sr)
            pos += int(0.02 * sr)
        an.add_video(f.pts, f.frame.y)
    steps = np.diff(ends)
    frame = 1.0 / avatar.fps
    searching, located = steps[:2], steps[2:]
    assert located.size >= 5
    assert np.all(np.abs(searching - 1.0) <= frame + 1e-9)
    assert np.all(located >= hop_s - 1e-9) and np.all(located <= hop_s + frame + 1e-9)
    # every window after the first two is confident on the reference face
    assert len(offsets) >= len(ends) - 2
    assert abs(float(np.median(offsets)) * 1000 + 60) <= 5


def test_hop_is_validated() -> None:
    with pytest.raises(ValueError, match="hop_s must be in"):
        LipSyncConfig(hop_s=0.0)
    with pytest.raises(ValueError, match="hop_s must be in"):
        LipSyncConfig(window_s=8.0, hop_s=5.0)
    with pytest.raises(ValueError, match="locate_hop_s must be in"):
        LipSyncConfig(locate_hop_s=-1.0)


def test_a_brief_faint_blip_in_a_still_mouth_is_still() -> None:
    from syncmon.analysis.lipsync import _without_blips

    t = np.arange(0.0, 4.0, 0.04)
    motion = np.full(t.size, 2.0)
    level = 10.0
    faint = (t > 0.99) & (t < 1.1)  # 3 frames at 12: noise
    strong = (t > 1.99) & (t < 2.1)  # 3 frames at 25: twice the level, a mouth
    long = (t > 2.99) & (t < 3.4)  # 10 frames at 12: longer than the motion's span
    motion[faint] = 12.0
    motion[strong] = 25.0
    motion[long] = 12.0
    motion[-2:] = 12.0  # at the window's end: may go on beyond it
    still = _without_blips(t, motion, motion < level, level)
    assert np.count_nonzero(faint) == 3 and np.all(still[faint])
    assert np.count_nonzero(strong) == 3 and not np.any(still[strong])
    assert not np.any(still[long]) and not np.any(still[-2:])
    assert np.count_nonzero(~still) == np.count_nonzero(strong | long) + 2


def test_against_the_speaking_level_a_frame_is_a_blip_and_a_soft_syllable_is_not() -> None:
    from syncmon.analysis.face import MOTION_SPAN_S
    from syncmon.analysis.lipsync import _without_blips

    # a level set by the window's speaking motion (0.35 of its upper quartile), far above the
    # picture's noise
    t = np.arange(0.0, 4.0, 0.04)
    motion = np.full(t.size, 3.0)
    level = 238.0
    frame = (t > 0.99) & (t < 1.01)  # one frame at 300: what a frozen mouth keeps of the head
    syllable = (t > 1.99) & (t < 2.19)  # five frames at 240-350, under twice the level
    motion[frame] = 300.0
    motion[syllable] = [244.0, 314.0, 349.0, 331.0, 250.0]
    assert float(t[np.flatnonzero(syllable)[-1] + 1] - t[np.argmax(syllable) - 1]) < MOTION_SPAN_S
    still = _without_blips(t, motion, motion < level, level)
    assert np.count_nonzero(frame) == 1 and np.all(still[frame])
    assert np.count_nonzero(syllable) == 5 and not np.any(still[syllable])
    assert np.count_nonzero(~still) == 5


def test_a_freezes_edges_are_placed_by_the_mouths_change_where_its_motion_blurs_them() -> None:
    from syncmon.analysis.lipstill import FACE_EDGE_CHANGE, FACE_EDGE_S, StillAccount
    from syncmon.analysis.lipsync import LipSyncConfig

    # 25 fps of speech throughout; the mouth frozen over [2.0, 4.0): its frames from the
    # second on change by the picture's noise only, the first and the one after it by the
    # movement into and out of the freeze. Its motion (a mean over 0.28 s of the high-passed
    # picture) reads still only over [2.24, 3.76): the motion around the freeze leaks in
    t = np.arange(0.0, 6.0, 0.04)
    frozen = (t >= 2.0 - 1e-9) & (t < 4.0 - 1e-9)
    rng = np.random.default_rng(3)
    noise = rng.uniform(0.5, 2.0, t.size)
    change = np.where(frozen, noise, rng.uniform(40.0, 400.0, t.size))
    first, after = int(np.argmax(frozen)), int(np.flatnonzero(frozen)[-1]) + 1
    change[first] = change[after] = 900.0
    still = (t >= 2.24 - 1e-9) & (t < 3.76 - 1e-9)
    speaking = np.ones(t.size, bool)

    def counted(change: np.ndarray | None) -> tuple[float, int]:
        account = StillAccount(LipSyncConfig().still_min_s, LipSyncConfig().still_bridge_s)
        account.judge(t, still, still, speaking, (0.0, 0.0), change)
        return account.counts.seconds, account.counts.episodes

    # each frame counts the interval before it, and the mouth is still between the frames that
    # show it frozen: (t[first], t[after - 1]], 1.96 s
    truth = float(t[after - 1] - t[first])
    assert counted(change) == pytest.approx((truth, 1))
    # without the change, the blurred edges are lost: 0.24 s and 0.2 s
    assert counted(None)[0] == pytest.approx(truth - 0.44)
    # a noise spike near an edge above FACE_EDGE_CHANGE times the freeze's median change stops
    # the edge there: the frames beyond it are not counted
    spiky = change.copy()
    spiky[first + 3] = FACE_EDGE_CHANGE * float(np.median(noise[frozen])) * 3
    assert counted(spiky)[0] == pytest.approx(truth - 0.12)
    # a mouth that goes on moving as little as the frozen one's noise is taken in up to
    # FACE_EDGE_S from the run's last still frame (3.72 s: what cannot be told from a
    # freeze), and no further
    slow = change.copy()
    slow[after:] = 1.0
    beyond = (t > t[after - 1] + 1e-9) & (t <= 3.72 + FACE_EDGE_S + 1e-9)
    assert counted(slow)[0] == pytest.approx(truth + 0.04 * np.count_nonzero(beyond))


def test_a_freeze_just_over_the_minimum_that_its_blurred_motion_reads_under_it_is_counted() -> None:
    from syncmon.analysis.lipstill import StillAccount
    from syncmon.analysis.lipsync import LipSyncConfig

    # 25 fps of speech throughout, the mouth frozen over [2.0, end): its motion reads still
    # 0.24 s inside either edge (as in the test above), so a freeze with a little over the
    # counter's minimum of speech reads as a still run under it
    t = np.arange(0.0, 6.0, 0.04)
    speaking = np.ones(t.size, bool)
    rng = np.random.default_rng(4)
    minimum = LipSyncConfig().still_min_s

    def counted(end: float, frozen_change: bool = True) -> tuple[float, int, float]:
        frozen = (t >= 2.0 - 1e-9) & (t < end - 1e-9)
        noise = rng.uniform(0.5, 2.0, t.size)
        change = np.where(frozen & frozen_change, noise, rng.uniform(40.0, 400.0, t.size))
        first, after = int(np.argmax(frozen)), int(np.flatnonzero(frozen)[-1]) + 1
        change[first] = change[after] = 900.0
        still = (t >= 2.24 - 1e-9) & (t < end - 0.24 - 1e-9)
        assert float(t[np.flatnonzero(still)[-1]] - t[np.argmax(still)]) < minimum
        account = StillAccount(minimum, LipSyncConfig().still_bridge_s)
        account.judge(t, still, still, speaking, (0.0, 0.0), change)
        return account.counts.seconds, account.counts.episodes, float(t[after - 1] - t[first])

    # 1.16 s of speech frozen, 0.64 s of it read still: counted to the truth with its edges
    seconds, episodes, truth = counted(3.2)
    assert truth > minimum and episodes == 1 and seconds == pytest.approx(truth)
    # 0.88 s frozen: under the minimum with its edges too, nothing
    seconds, episodes, truth = counted(2.9)
    assert truth < minimum and (seconds, episodes) == (0.0, 0)
    # the same still run where the mouth goes on changing as a speaking one does around it
    # (a soft syllable read still): no edges, nothing
    seconds, episodes, _ = counted(3.2, frozen_change=False)
    assert (seconds, episodes) == (0.0, 0)


def test_a_run_bridged_over_a_pause_ends_where_the_mouth_moves_as_the_voice_resumes() -> None:
    from syncmon.analysis.lipstill import RESUME_FRAMES, StillAccount
    from syncmon.analysis.lipsync import LipSyncConfig

    # 25 fps; the voice pauses over [3.0, 3.8); the mouth freezes at 2.2, so 0.8 s of speech
    # is frozen before the pause, under the counter's 1 s minimum
    t = np.arange(0.0, 6.0, 0.04)
    speaking = (t < 3.0 - 1e-9) | (t >= 3.8 - 1e-9)
    rng = np.random.default_rng(5)
    minimum = LipSyncConfig().still_min_s

    def counted(
        frozen_until: float,
        spike: bool = False,
        head_turns: bool = False,
        fast: bool = False,
        still_head: bool = False,
    ) -> tuple[float, int]:
        frozen = (t >= 2.2 - 1e-9) & (t < frozen_until - 1e-9)
        # the head's speed (pixels a frame): nodding (every third frame at 1.2, else 0.2),
        # or, ``head_turns``, at 1.6 over the first 0.4 s after the pause, as a head that
        # nods with the voice does, on a textured face whose registration leaves 30 times its
        # speed squared in a frozen mouth's cells
        resumed = (t >= 3.8 - 1e-9) & (t < 4.2 - 1e-9)
        head = np.where(np.arange(t.size) % 3 == 0, 1.2, 0.2)
        head[resumed & head_turns] = 1.6
        change = np.where(
            frozen,
            30.0 * head**2 + rng.uniform(0.0, 0.5, t.size),
            rng.uniform(300.0, 900.0, t.size),
        )
        change[int(np.argmax(frozen))] = 900.0  # the movement into the freeze
        if spike:  # the frozen picture's noise, once, as the voice resumes
            change[int(np.argmax(t >= 3.8 - 1e-9))] = 60.0
        if fast:
            # a photographic face whose registration leaves little (twice its speed squared)
            # while the head moves at 0.2 px a frame, then, as the voice resumes, a head
            # moving at 2 px a frame that registration trails: a frozen mouth's cells change
            # by 233 there (photo 6010), over what the slow head's leak predicts
            head = np.full(t.size, 0.2)
            head[resumed] = 2.0
            change = np.where(frozen, 2.0 * head**2 + rng.uniform(0.0, 0.1, t.size), change)
            change[frozen & resumed] = 233.0
        if still_head:
            head = np.zeros(t.size)
        # the face's motion (a mean over 0.28 s) reads the first 0.32 s after the pause still
        # whether or not the mouth moves there
        still = (t >= 2.2 - 1e-9) & (t < max(frozen_until, 4.12) - 1e-9)
        account = StillAccount(minimum, LipSyncConfig().still_bridge_s)
        account.judge(t, still, still, speaking, (0.0, 0.0), change, head)
        return account.counts.seconds, account.counts.episodes

    # the mouth moves again as the voice resumes: 0.8 s frozen, nothing counted (it counted
    # 1.12 s, the resumed speech's first 0.32 s taken into the run across the pause)
    assert counted(3.8) == (0.0, 0)
    # frozen on through the pause for 1.2 s more of speech: one episode, 2.0 s, with a noise
    # spike among the first RESUME_FRAMES changes (which their median passes over), and where
    # the head turns as the voice resumes (its leak, 77 luma levels squared, is over the
    # speech's tenth and the run's edge limit, and split the run into two short ones), and
    # where it moves faster than it did over the run (its leak there is not known)
    frozen_speech = 0.04 * np.count_nonzero(speaking & (t > 2.2 + 1e-9) & (t < 5.0 - 1e-9))
    for kind in ({"spike": True}, {"head_turns": True}, {"fast": True}):
        seconds, episodes = counted(5.0, **kind)
        assert RESUME_FRAMES > 2 and episodes == 1, kind
        assert seconds == pytest.approx(frozen_speech, abs=0.05), kind
    # a head whose registration never moved (a flat face: every speed 0) leaks nothing, and
    # the mouth moving as the voice resumes still ends the run
    assert counted(3.8, still_head=True) == (0.0, 0)


def test_a_long_run_ends_where_the_mouth_moves_as_the_voice_resumes() -> None:
    from syncmon.analysis.lipstill import StillAccount
    from syncmon.analysis.lipsync import LipSyncConfig

    # 25 fps; the mouth speaks until 0.5 s, then is frozen through 4.0 s of speech, a pause
    # over [4.5, 5.3), and moves again as the voice resumes; the face's motion reads it still
    # for 0.32 s more. Judged a window at a time (a second's new frames each), as the
    # estimator does: the frames kept (a few seconds) no longer reach the speech before the
    # run when the voice resumes
    t = np.arange(0.0, 8.0, 0.04)
    speaking = (t < 4.5 - 1e-9) | (t >= 5.3 - 1e-9)
    frozen = (t >= 0.5 - 1e-9) & (t < 5.3 - 1e-9)
    rng = np.random.default_rng(7)
    change = np.where(frozen, rng.uniform(0.5, 2.0, t.size), rng.uniform(300.0, 900.0, t.size))
    change[int(np.argmax(frozen))] = 900.0  # the movement into the freeze
    head = np.full(t.size, 0.1)
    still = (t >= 0.5 - 1e-9) & (t < 5.62 - 1e-9)
    config = LipSyncConfig()
    account = StillAccount(config.still_min_s, config.still_bridge_s)
    for end in np.arange(1.0, 8.01, 1.0):
        part = t <= end + 1e-9
        account.judge(
            t[part], still[part], still[part], speaking[part], (0.0, 0.0), change[part], head[part]
        )
    # the frozen speech alone: 4.0 s, one episode (4.32 s when the speech before the run was
    # forgotten, and the resumption could not be judged against it)
    assert account.counts.episodes == 1
    assert account.counts.seconds == pytest.approx(4.0, abs=0.05)


def test_a_freeze_goes_on_where_the_heads_swing_leaves_the_frozen_mouth_reading_moving() -> None:
    from syncmon.analysis.lipstill import HEAD_BLIP_S, StillAccount
    from syncmon.analysis.lipsync import LipSyncConfig

    # 30 fps, the voice speaking throughout; the mouth frozen over [1.0, 2.8): 1.8 s of
    # speech, of which each side of the stretch [1.8, 2.0) is 0.8 s, under the 1 s minimum
    t = np.arange(0.0, 4.0, 1 / 30)
    speaking = np.ones(t.size, bool)
    frozen = (t >= 1.0 - 1e-9) & (t < 2.8 - 1e-9)
    rng = np.random.default_rng(18)
    config = LipSyncConfig()

    def counted(
        stretch: tuple[float, float], moves: bool = False, speed: float = 1.0, soft: bool = False
    ) -> float:
        inside = (t >= stretch[0] - 1e-9) & (t < stretch[1] - 1e-9)
        # a head nodding with the voice (every third frame at 1.2 px, else 0.2), on a
        # textured face whose registration leaves 30 times its speed squared in a frozen
        # mouth's cells; over the stretch it swings at ``speed``, and the frozen mouth's
        # motion reads over the level between moving and still there (hopper 18009)
        head = np.where(np.arange(t.size) % 3 == 0, 1.2, 0.2)
        head[inside] = speed
        change = np.where(
            frozen & ~(inside & moves),
            30.0 * head**2 + rng.uniform(0.0, 0.5, t.size),
            rng.uniform(300.0, 900.0, t.size),
        )
        change[int(np.argmax(frozen))] = 900.0  # the movement into the freeze
        if soft:  # not frozen: a mouth speaking softly, read still, changing by 60-120
            change[frozen] = rng.uniform(60.0, 120.0, np.count_nonzero(frozen))
        still = frozen & ~inside
        account = StillAccount(config.still_min_s, config.still_bridge_s)
        account.judge(t, still, still, speaking, (0.0, 0.0), change, head)
        assert account.counts.episodes == int(account.counts.seconds > 0)
        return account.counts.seconds

    # the head's swing explains the stretch's change (30 against 150 for a margin of five):
    # one episode over the whole freeze (without the rule: two runs of 0.8 s, nothing)
    assert counted((1.8, 2.0)) == pytest.approx(1.8, abs=0.05)
    # the mouth does move there (a syllable spoken mid-freeze, changing by 300-900): two
    # runs, each short of the minimum, nothing
    assert counted((1.8, 2.0), moves=True) == 0.0
    # a stretch longer than the motion's span is not the head alone: nothing
    assert HEAD_BLIP_S < 0.4
    assert counted((1.7, 2.1)) == 0.0
    # a head swinging faster than it did anywhere over the run (its leak there is not
    # known): nothing
    assert counted((1.8, 2.0), speed=3.0) == 0.0
    # a mouth speaking softly, read still on either side: its change over the head's speed
    # squared is no leak (it would explain anything), and nothing is counted
    assert counted((1.8, 2.0), soft=True) == 0.0


def test_the_last_mouths_region_is_searched_alone_while_it_holds_its_lag() -> None:
    from syncmon.analysis.lipsync import ContentOffsetEstimator, LipSyncConfig

    c = LipSyncConfig(calibration_s=0.05)
    est = ContentOffsetEstimator(c)
    # nothing before it: the full search
    assert not est._region_holds((0.07, 0.6, 0.5), 10.0)
    est._prev = (10.0, 0.02)  # the estimate a second before: +20 ms published (lag 70 ms)
    # confident enough to publish, at the same lag within agree_s: the region holds
    assert est._region_holds((0.07 + c.agree_s * 0.9, 0.6, c.min_confidence + 0.01), 11.0)
    # another lag (a syllable off, the head), too little confidence, no estimate, or an
    # estimate before it too long ago to compare with: every candidate is searched
    assert not est._region_holds((0.07 + c.agree_s * 1.1, 0.6, 0.9), 11.0)
    assert not est._region_holds((0.07, 0.6, c.min_confidence - 0.01), 11.0)
    assert not est._region_holds(None, 11.0)
    assert not est._region_holds((0.07, 0.6, 0.9), 10.0 + 3.6 * c.hop_s)


def test_between_full_searches_the_last_mouths_region_is_the_only_candidate() -> None:
    # a viseme mouth on a head nodding with the speech: its edges follow the speech too (the
    # plain ranking's best cells), and between full searches they are not tried again
    from syncmon.analysis.lipsync import ContentOffsetEstimator
    from syncmon.reference.articulation import ArticulationConfig

    # (full, regions tried, found in the last zone, searched around the seed that found it)
    tried: list[tuple[bool, int, bool, bool]] = []
    real_seeds, real_find = ContentOffsetEstimator._seeds, ContentOffsetEstimator._find_mouth

    def seeds(self: ContentOffsetEstimator, *a: object) -> tuple[list[int], object]:
        out = real_seeds(self, *a)  # type: ignore[arg-type]
        self._spy_seeds = len(out[0])  # type: ignore[attr-defined]
        return out

    def find(self: ContentOffsetEstimator, a_n: object, pic: object, full: bool = True) -> object:
        model = self._model
        out = real_find(self, a_n, pic, full)  # type: ignore[arg-type]
        found = out[0]
        regions = self._spy_seeds + int(model is not None)  # type: ignore[attr-defined]
        inside = (
            found is not None
            and model is not None
            and bool(np.all(np.isin(found.cells, model.zone(self._shape))))
        )
        # the region searched alone is the one the mouth was found in (centred on its seed,
        # every cell of the mouth inside it), not one centred on the mouth's strongest cell,
        # which may lie at that region's edge and leave the rest of the mouth among the
        # cells it is cleaned of
        cols = self._shape[1]
        same = (
            model is not None
            and found is not None
            and found.seed == model.seed
            and max(abs(int(x) // cols - model.seed // cols) for x in model.cells) <= 1
            and max(abs(int(x) % cols - model.seed % cols) for x in model.cells) <= 1
        )
        tried.append((full, regions, inside, same))
        return out

    avatar = ReferenceAvatar(
        impairments=Impairments(offset_ms=40),
        articulation=ArticulationConfig(head_px=4.0, head_roll_deg=2.0, head_lead_s=0.2),
    )
    mp = pytest.MonkeyPatch()
    mp.setattr(ContentOffsetEstimator, "_seeds", seeds)
    mp.setattr(ContentOffsetEstimator, "_find_mouth", find)
    try:
        an = feed_avatar(avatar, 24.0)
    finally:
        mp.undo()
    full = [t for t in tried if t[0]]
    region = [t for t in tried if not t[0]]
    assert full and region, tried
    # a full search tries the candidates of three rankings; between them, the one region
    assert all(n > 1 for _, n, _, _ in full), full
    assert all(n <= 1 for _, n, _, _ in region), region
    assert sum(inside for _, _, inside, _ in region) >= len(region) - 1, region
    assert sum(bool(same) for _, _, _, same in region) >= len(region) - 1, region
    content = an.report(summary=True)["offset_ms"]["content"]
    assert content is not None and abs(content - 40) <= 5, content


def test_before_the_mouths_cells_are_learned_the_face_judges_at_the_published_lag() -> None:
    """A viseme mouth on a nodding head is often published by the face's own judge without
    the picture's cells ever being learned: the face then judges stillness, and the voice a
    picture shows is the published lag before it. Judged at lag 0, a picture 200 ms late had
    each freeze that ends mid-speech counted with the 0.2 s of speech after it."""
    from syncmon.analysis.lipsync import ContentOffsetEstimator, FaceMotion

    lag = 0.2
    tf = np.arange(0.0, 8.0, 1 / 15)
    at = np.arange(0.0, 8.5, 0.01)
    # the voice speaks over [1, 7) s (speech time) and pauses after; the mouth is frozen over
    # [5.0, 7.4) of speech time, which the late picture shows over [5.2, 7.6)
    env = np.where((at >= 1.0) & (at < 7.0), 0.2, 0.0)
    frozen = (tf - lag >= 5.0) & (tf - lag < 7.4)
    motion = np.where(frozen | (tf - lag >= 7.0), 2.0, 300.0)
    change = np.where(frozen, 1.0, 500.0)

    def counted(published: float | None) -> float:
        est = ContentOffsetEstimator()
        est._published_lag = published
        est._face_still(FaceMotion(tf, motion, change, np.zeros(tf.size)), at, env, env, final=True)
        return est.lip_still.seconds

    # the truth: the speech the frozen frames show, [5.0, 7.0) widened by the 60 ms after
    # the voice stops, in whole frames
    shows = tf - lag
    truth = float(np.count_nonzero(frozen & (shows < 7.0 + 0.06))) / 15
    assert counted(lag) == pytest.approx(truth, abs=1.5 / 15)
    # judged at lag 0, the voice placed against the frozen frames stops 0.2 s early: the
    # freeze's last 0.2 s of speech are lost (where speech follows a freeze instead, as many
    # seconds of it are added)
    assert counted(None) == pytest.approx(truth - lag, abs=1.5 / 15)
