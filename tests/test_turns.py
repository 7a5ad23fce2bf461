"""Turns measured on audio alone (analysis.turns) against a scripted conversation's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from syncmon.analysis.turns import (
    INTERRUPT_MIN_S,
    MAX_USERS,
    STALE_S,
    Interruption,
    Response,
    Turns,
    VoiceActivity,
)
from syncmon.errors import MediaError
from syncmon.media import analyze_file
from syncmon.reference import ReferenceAvatar, SpeechSource
from syncmon.reference.avatar import Impairments
from syncmon.reference.conversation import conversation
from syncmon.reference.render import RenderOptions, render

SR = 16000
CHUNK = int(0.05 * SR)


def run(
    user: np.ndarray | None,
    avatar: np.ndarray | None,
    *,
    user_noise_dbfs: float | None = None,
    delivery_s: float = 0.03,
) -> list[Response | Interruption]:
    """Both sides in 50 ms chunks, each arriving ``delivery_s`` after it ends (as the monitor
    gets them), the events collected as they are decided."""
    turns = Turns(SR)
    n = max(x.size for x in (user, avatar) if x is not None)
    if user is not None:
        turns.add_user("u")
        if user_noise_dbfs is not None:
            rng = np.random.default_rng(3)
            user = user + rng.standard_normal(user.size).astype(np.float32) * 10 ** (
                user_noise_dbfs / 20
            )
    out: list[Response | Interruption] = []
    for i in range(0, n - CHUNK + 1, CHUNK):
        t = i / SR
        now = t + CHUNK / SR + delivery_s
        if user is not None:
            turns.user_audio("u", user[i : i + CHUNK], t, now)
        if avatar is not None:
            turns.avatar_audio("a", avatar[i : i + CHUNK], t, now)
        out += turns.events(now)
    return out


def responses(evs: list[Response | Interruption]) -> list[float]:
    return [e.seconds for e in evs if isinstance(e, Response)]


def stops(evs: list[Response | Interruption]) -> list[float | None]:
    return [e.stop_s for e in evs if isinstance(e, Interruption)]


@pytest.mark.parametrize(
    ("delays", "seed", "noise", "bound"),
    [
        ((0.6, 0.9, 1.5), 5, None, 0.010),
        ((0.6, 0.9, 1.5), 6, -70.0, 0.010),
        ((0.25, 2.5, 0.45), 7, None, 0.010),
        ((0.3, 0.3, 0.3), 9, -62.0, 0.025),
        # a noisy microphone (-55 dBFS of hiss) hides the last 10-30 ms of each word's fade:
        # the user's end is found that much early (README)
        ((1.0, 0.4, 3.0, 0.7), 8, -55.0, 0.035),
    ],
)
def test_responses_and_interruptions_match_the_truth(
    delays: tuple[float, ...], seed: int, noise: float | None, bound: float
) -> None:
    user, avatar, truth = conversation(delays, stop_s=0.35 + 0.05 * (seed % 3), seed=seed, sr=SR)
    evs = run(user, avatar, user_noise_dbfs=noise)
    got = responses(evs)
    # every turn answered once (the backchannel and the words over the avatar are no turns of
    # their own but the one the next answer answers), in order, within the bound
    assert len(got) == len(truth.responses_s), (got, truth)
    assert np.max(np.abs(np.array(got) - np.array(truth.responses_s))) <= bound, (got, truth)
    # one interruption (the "mm-hm" is not one), timed within 10 ms
    got_stops = stops(evs)
    assert len(got_stops) == len(truth.interruption_stops_s), (got_stops, truth)
    for g, t in zip(got_stops, truth.interruption_stops_s, strict=True):
        assert g is not None and abs(g - t) <= 0.010, (got_stops, truth)


def test_a_room_where_nobody_speaks_counts_nothing() -> None:
    silence = np.zeros(20 * SR, np.float32)
    rng = np.random.default_rng(1)
    hiss = (rng.standard_normal(20 * SR) * 10 ** (-60 / 20)).astype(np.float32)
    assert run(silence, silence) == []
    assert run(hiss, silence) == []


def test_an_avatar_talking_alone_or_a_user_unanswered_counts_nothing() -> None:
    user, avatar, _ = conversation((0.6, 0.9), seed=11, sr=SR)
    silence = np.zeros_like(user)
    assert run(silence, avatar) == []  # a user who is silent: nothing is an answer
    assert run(user, silence) == []  # the avatar never answers: no response, no interruption
    assert run(None, avatar) == []  # nobody followed


def test_a_user_whose_audio_stops_arriving_does_not_hold_the_answers_back() -> None:
    user, avatar, truth = conversation((0.8,), seed=12, sr=SR)
    turns = Turns(SR)
    turns.add_user("u")
    turns.add_user("muted")  # subscribed, but sends nothing after its first chunk
    turns.user_audio("muted", np.zeros(CHUNK, np.float32), 0.0, 0.05)
    got: list[Response | Interruption] = []
    for i in range(0, user.size - CHUNK + 1, CHUNK):
        now = (i + CHUNK) / SR + 0.03
        turns.user_audio("u", user[i : i + CHUNK], i / SR, now)
        turns.avatar_audio("a", avatar[i : i + CHUNK], i / SR, now)
        got += turns.events(now)
    assert len(responses(got)) == 1
    assert abs(responses(got)[0] - truth.responses_s[0]) <= 0.030
    assert STALE_S < 2.0  # decided well within the conversation's tail


def test_users_beyond_the_bound_are_not_followed() -> None:
    turns = Turns(SR)
    assert all(turns.add_user(f"u{i}") for i in range(MAX_USERS))
    assert not turns.add_user("one-more")
    assert len(turns.users) == MAX_USERS
    turns.remove_user("u0")
    assert turns.add_user("one-more")


def test_voice_activity_segments_a_known_burst_to_the_block() -> None:
    """A tone from 1.003 to 1.50 s and from 1.70 to 2.006 s (a 200 ms pause: one segment) at
    -20 dBFS over silence: one segment, its edges within a quarter block (2.5 ms)."""
    x = np.zeros(4 * SR, np.float32)
    t = np.arange(x.size) / SR
    on = ((t >= 1.003) & (t < 1.5)) | ((t >= 1.7) & (t < 2.006))
    x[on] = 0.1 * np.sin(2 * np.pi * 220 * t[on])
    va = VoiceActivity(SR)
    # chunks of uneven size, each timed where it starts
    i = 0
    for size in [700, 1300, 800] * 40:
        if i >= x.size:
            break
        va.add(x[i : i + size], i / SR, (i + size) / SR)
        i += size
    segs = va.confirmed()
    assert len(segs) == 1
    assert abs(segs[0].start - 1.003) <= 0.0025 and segs[0].end is not None
    assert abs(segs[0].end - 2.006) <= 0.0025


def test_a_short_overlap_is_a_backchannel_not_an_interruption() -> None:
    """The avatar speaks 1-6 s; the user says something 0.3 s long at 2 s (below
    INTERRUPT_MIN_S), then 1.2 s from 4 s: one interruption, from 4 s, to the avatar's end."""
    n = 9 * SR
    t = np.arange(n) / SR
    tone = (0.1 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    avatar = np.where((t >= 1.0) & (t < 6.0), tone, 0).astype(np.float32)
    user = np.where(((t >= 2.0) & (t < 2.3)) | ((t >= 4.0) & (t < 5.2)), tone, 0)
    assert 0.3 < INTERRUPT_MIN_S < 1.2
    got = stops(run(user.astype(np.float32), avatar))
    assert len(got) == 1 and got[0] is not None
    assert abs(got[0] - 2.0) <= 0.020


def test_conversation_rejects_impossible_scripts() -> None:
    with pytest.raises(ValueError, match="delays"):
        conversation((0.0, 1.0))
    with pytest.raises(ValueError, match="stop_s"):
        conversation((0.5,), stop_s=9.0)


def test_each_streams_jitter_buffer_delay_is_taken_out() -> None:
    """A monitor whose buffer holds the user's audio 60 ms and the avatar's 20 ms hears the
    answer 40 ms sooner than it came: the edges are taken back by each stream's own delay."""
    user, avatar, truth = conversation((0.7, 1.1), seed=13, sr=SR)
    turns = Turns(SR)
    turns.add_user("u")
    got: list[Response | Interruption] = []
    lag_u, lag_a = 0.060, 0.020
    for i in range(0, user.size - CHUNK + 1, CHUNK):
        t = i / SR
        now = t + CHUNK / SR + 0.1
        turns.user_audio("u", user[i : i + CHUNK], t + lag_u, now)
        turns.avatar_audio("a", avatar[i : i + CHUNK], t + lag_a, now)
        turns.set_user_delay("u", lag_u)
        turns.set_avatar_delay("a", lag_a)
        got += turns.events(now)
    r = responses(got)
    assert len(r) == 2
    assert np.max(np.abs(np.array(r) - np.array(truth.responses_s))) <= 0.010, (r, truth)


@pytest.mark.parametrize(("ext", "how"), [(".mp4", "stream"), (".webm", "stereo")])
def test_analyze_reports_the_turns_of_a_recording(tmp_path: Path, ext: str, how: str) -> None:
    """A recording of the conversation (the user's voice as a second stream, or on the right
    of a stereo one), the avatar's picture 80 ms late: the answers, the mouth's answers and
    the interruption as the script says, and the lip-sync measured on the avatar's voice."""
    user, voice, truth = conversation((0.6, 0.9, 1.5), stop_s=0.4, seed=5)
    avatar = ReferenceAvatar(
        width=320,
        height=240,
        speech=SpeechSource(script=voice),
        impairments=Impairments(offset_ms=80.0),
    )
    path = tmp_path / f"conversation{ext}"
    render(avatar, path, RenderOptions(duration_s=truth.duration_s), user_voice=user, user_as=how)
    rep = analyze_file(path, turns=True)
    want = np.array(truth.responses_s)
    audio = np.array(rep["turns"]["response_s"]["audio"])
    assert audio.size == want.size and np.max(np.abs(audio - want)) <= 0.010, (audio, want)
    assert abs(rep["offset_ms"]["content"] - 80.0) <= 10.0, rep["offset_ms"]
    video = np.array(rep["turns"]["response_s"]["video"])
    assert np.max(np.abs(video - (want + 0.080))) <= 0.015, (video, want)
    assert rep["turns"]["interruptions"] == 1
    (stop,) = rep["turns"]["interruption_stop_s"]
    assert abs(stop - truth.interruption_stops_s[0]) <= 0.010


def test_analyze_turns_names_what_a_mono_recording_lacks(tmp_path: Path) -> None:
    path = tmp_path / "mono.mp4"
    render(ReferenceAvatar(width=160, height=120), path, RenderOptions(duration_s=2.0))
    with pytest.raises(MediaError, match="second audio stream, or a stereo one"):
        analyze_file(path, turns=True)
