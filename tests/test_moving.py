"""The first picture that moves with the speech (``ContentOffsetEstimator.moving_at``), against
the reference avatar's own truth (``ReferenceAvatar.mouth_moves``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import feed_avatar

from syncmon.analysis import SyncAnalyzer
from syncmon.analysis.moving import moving_onset, stretches
from syncmon.reference import Impairments, ReferenceAvatar, SpeechSource
from syncmon.reference.articulation import ArticulationConfig

DURATION_S = 24.0
HEAD = ArticulationConfig(
    tau_s=0.045, anticipation_s=0.025, head_px=5.0, head_roll_deg=2.5, head_lead_s=0.22
)


def avatar(seed: int, held: float = 0.0, art: ArticulationConfig | None = None) -> ReferenceAvatar:
    return ReferenceAvatar(
        impairments=Impairments(seed=seed, lip_still=((0.0, held),) if held else ()),
        speech=SpeechSource(seed=seed, consonants=art is not None, phrase_pause_s=(0.4, 1.5)),
        articulation=art,
    )


def truth(av: ReferenceAvatar, video_from: float) -> float:
    return next(
        f.pts for f in av.frames(DURATION_S) if f.pts >= video_from and av.mouth_moves(f.speech_t)
    )


def onset_after(seed: int, t: float, consonants: bool = False) -> float:
    """The speech's first onset after ``t`` s that follows a pause of 0.5 s or more."""
    sp = SpeechSource(seed=seed, consonants=consonants, phrase_pause_s=(0.4, 1.5))
    sr = sp.sample_rate
    x = sp.samples(0, int((t + 10) * sr)).astype(np.float64)
    hop = sr // 100
    on = np.sqrt(np.mean(x[: x.size // hop * hop].reshape(-1, hop) ** 2, axis=1)) > 0.01
    return next(i / 100 for i in range(int(t * 100), on.size) if on[i] and not on[i - 50 : i].any())


def feed(av: ReferenceAvatar, video_from: float = 0.0) -> SyncAnalyzer:
    return feed_avatar(av, DURATION_S, video_from)


@pytest.mark.parametrize(
    ("seed", "video_from", "art"),
    [(5, 0.0, None), (6, 2.3, None), (7, 5.1, HEAD), (8, 0.0, HEAD)],
    ids=["from-start", "video-late", "video-late-nodding", "nodding"],
)
def test_a_mouth_moving_with_its_voice_is_timed_to_the_frame(
    seed: int, video_from: float, art: ArticulationConfig | None
) -> None:
    an = feed(avatar(seed, art=art), video_from)
    got = an.content.moving_at
    assert got is not None
    assert abs(got - truth(avatar(seed, art=art), video_from)) <= 0.040 + 1e-6


@pytest.mark.parametrize("art", [None, HEAD], ids=["reference", "nodding"])
def test_a_mouth_held_shut_through_the_first_utterances_moves_at_the_next(
    art: ArticulationConfig | None,
) -> None:
    seed = 9
    held = onset_after(seed, 5.0, consonants=art is not None) - 0.05
    true = truth(avatar(seed, held, art), 0.0)
    assert true > 5.0  # the freeze did hold the mouth past the first utterances
    got = feed(avatar(seed, held, art)).content.moving_at
    assert got is not None
    assert abs(got - true) <= 0.040 + 1e-6


def stepped(
    step_ms: float, art: ArticulationConfig | None, held: float = 0.0, fps: float = 25.0
) -> ReferenceAvatar:
    """Seed 8's avatar whose sender's offset steps by ``step_ms`` 6 s in."""
    return ReferenceAvatar(
        fps=fps,
        impairments=Impairments(
            seed=8, offset_steps=((6.0, step_ms),), lip_still=((0.0, held),) if held else ()
        ),
        speech=SpeechSource(seed=8, consonants=art is not None, phrase_pause_s=(0.4, 1.5)),
        articulation=art,
    )


@pytest.mark.parametrize(
    ("art", "step_ms"),
    [(None, -120.0), (None, 120.0), (HEAD, -120.0)],
    ids=["reference-audio-fell-behind", "reference-audio-caught-up", "nodding-audio-fell-behind"],
)
def test_a_mouth_located_after_its_senders_offset_stepped_is_timed_from_its_start(
    art: ArticulationConfig | None, step_ms: float
) -> None:
    """An avatar host starved of CPU: its audio fell ~100 ms behind its video a few seconds
    in (or caught up). The mouth is located after the step, at the lag after it; it moved with
    the voice from the first speech, at the lag before. (A nodding head's audio catching up
    puts the first seconds' lag on the head's side of the located one, where the head's own
    motion in a frozen mouth follows the voice too: judged at the located lag alone there, as
    bench_startup --stepped shows.)"""
    true = truth(stepped(step_ms, art), 0.0)
    assert true < 6.0  # (the mouth moved before the step)
    got = feed(stepped(step_ms, art)).content.moving_at
    assert got is not None
    assert abs(got - true) <= 0.040 + 1e-6


@pytest.mark.parametrize("step_ms", [-120.0, 120.0], ids=["audio-fell-behind", "audio-caught-up"])
def test_a_frozen_mouth_on_a_nodding_head_is_not_taken_to_move_at_another_lag(
    step_ms: float,
) -> None:
    """Held shut for 8 s at 15 fps, the head nodding 220 ms ahead of the voice (a frozen mouth
    keeps the most of the head there), the sender's offset stepping 6 s in: the lags around
    the located one must not find the head's motion in the frozen mouth."""
    true = truth(stepped(step_ms, HEAD, held=8.0, fps=15), 0.0)
    assert true > 7.5  # (the freeze holds in the voice's time: the step moves its end)
    got = feed(stepped(step_ms, HEAD, held=8.0, fps=15)).content.moving_at
    assert got is not None
    # (within two frames: the onset's placement at 15 fps, judged at the located lag alone
    # as well; the head's motion in the frozen mouth read as moving was 6 s early)
    assert abs(got - true) <= 2 / 15 + 1e-6


def test_a_mouth_held_shut_throughout_never_moves() -> None:
    an = feed(avatar(10, DURATION_S))
    assert an.content.moving_at is None


def test_the_onset_is_unknown_once_the_streams_start_was_dropped() -> None:
    """A mouth moving with the first speech kept, but frames were dropped before it."""
    rng = np.random.default_rng(3)
    t = np.arange(0, 20, 0.04)
    stretches = [(2.0, 6.0), (8.0, 14.0)]
    speaking = np.any([(t >= a) & (t < b) for a, b in stretches], axis=0)
    voice = rng.standard_normal(t.size) * speaking
    mouth = voice + 0.1 * rng.standard_normal(t.size)
    known = t >= 12
    args = (t, (mouth, voice), mouth, known, stretches)
    assert moving_onset(*args, cut=True) is None
    assert moving_onset(*args, cut=False) == pytest.approx(2.0)


def test_short_pauses_do_not_end_a_stretch_of_speech() -> None:
    t = np.arange(0, 3, 0.01)
    active = ((t >= 0.5) & (t < 1.0)) | ((t >= 1.2) & (t < 1.5)) | ((t >= 2.0) & (t < 2.5))
    got = stretches(t, active)
    assert [(round(a, 2), round(b, 2)) for a, b in got] == [(0.5, 1.49), (2.0, 2.49)]


def test_a_recording_reports_when_its_mouth_first_moves(tmp_path: Path) -> None:
    from syncmon.media import analyze_file
    from syncmon.reference.render import RenderOptions, render

    seed = 11
    held = onset_after(seed, 4.0) - 0.05
    path = tmp_path / "held.mp4"
    render(avatar(seed, held), path, RenderOptions(duration_s=18.0, video_bitrate=350_000))
    got = analyze_file(path)["mouth_moving_s"]
    assert got is not None
    assert abs(got - truth(avatar(seed, held), 0.0)) <= 0.040 + 1e-6
