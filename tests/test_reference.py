"""The reference avatar: deterministic, its schedule matches its own truth."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from syncmon.reference import Impairments, ReferenceAvatar, SpeechSource

# a real audio source paced in real time: run alone (scripts/test.sh)
pytestmark = pytest.mark.serial


def test_same_seed_same_speech_and_pictures() -> None:
    a, b = ReferenceAvatar(), ReferenceAvatar()
    assert np.array_equal(a.audio(0, 48000 * 3), b.audio(0, 48000 * 3))
    fa = [f.frame.y for f in a.frames(2.0)]
    fb = [f.frame.y for f in b.frames(2.0)]
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert not np.array_equal(SpeechSource(seed=2).samples(0, 48000), a.audio(0, 48000))


def test_schedule_matches_truth() -> None:
    imp = Impairments(drop_rate=0.05, duplicate_rate=0.05, freezes=((4.0, 0.6),), seed=9)
    av = ReferenceAvatar(impairments=imp)
    frames = list(av.frames(20.0))
    truth = av.truth(20.0)
    assert len(frames) == truth.frames
    assert sum(f.duplicate for f in frames) == truth.duplicated > 0
    ids = [f.frame_id for f in frames]
    assert sum(b - a - 1 for a, b in zip(ids, ids[1:], strict=False)) == truth.dropped > 0
    assert truth.freezes == 1 and truth.freeze_seconds == pytest.approx(0.6)
    # frame_id does not advance over a freeze: the generator stalled, nothing was lost
    slots = [f.slot for f in frames]
    assert max(b - a for a, b in zip(slots, slots[1:], strict=False)) == 15


def test_offset_shifts_the_mouth_not_the_clock() -> None:
    av = ReferenceAvatar(impairments=Impairments(offset_ms=80))
    f = next(iter(av.frames(1.0)))
    assert f.pts == 0.0 and f.speech_t == pytest.approx(-0.08)


def test_an_offset_step_shifts_the_mouth_from_its_time_on() -> None:
    imp = Impairments(offset_ms=80, offset_steps=((2.0, -120.0),), seed=1)
    av = ReferenceAvatar(impairments=imp)
    late = {round(f.pts, 2): f.speech_t - f.pts for f in av.frames(4.0)}
    assert late[1.96] == pytest.approx(-0.08) and late[2.0] == pytest.approx(0.04)
    assert av.truth(4.0).offset_ms == pytest.approx(-40.0)  # the offset at the end
    with pytest.raises(ValueError, match=r"offset step \(-1\.0, 10\.0\)"):
        ReferenceAvatar(impairments=Impairments(offset_steps=((-1.0, 10.0),)))


def test_wav_file_is_spoken_and_looped(tmp_path: Path) -> None:
    path = tmp_path / "v.wav"
    tone = (np.sin(np.arange(8000) / 8000 * 2 * np.pi * 200) * 12000).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(tone.tobytes())
    sp = SpeechSource(wav=path)
    x = sp.samples(0, 48000 * 2)
    assert x.size == 96000 and np.max(np.abs(x)) == pytest.approx(12000 / 32768, rel=0.05)
    assert sp.mouth_open(0.5) > 0.5


def test_bad_wav_and_bad_impairments_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    with pytest.raises(ValueError, match="not a PCM WAV"):
        SpeechSource(wav=bad)
    with pytest.raises(ValueError, match="drop_rate"):
        ReferenceAvatar(impairments=Impairments(drop_rate=0.9))
    with pytest.raises(ValueError, match="even"):
        ReferenceAvatar(width=641)


def test_audio_still_late_when_it_ends_is_reported_to_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The publisher sends on a schedule with no queue: each late-sent stretch is logged once
    it is over (what the turns test allows for), and one still late when the audio ends is
    logged then, to where it ended."""
    import asyncio
    import logging
    import time

    from livekit import rtc

    from syncmon.reference.publisher import ReferencePublisher

    av = ReferenceAvatar(width=160, height=90, speech=SpeechSource(seed=2))
    pub = ReferencePublisher(av, url="ws://127.0.0.1:1", token="unused")  # never connects
    behind_s = 0.5

    async def run() -> None:
        src = rtc.AudioSource(av.sample_rate, 1)
        # every frame was due half a second ago: the whole 0.2 s is one late stretch
        await pub._audio(src, time.monotonic() - behind_s, 0.2)

    with caplog.at_level(logging.INFO, logger="syncmon.reference.publisher"):
        asyncio.run(run())
    # (the record's own arguments: the message's wording is the turns test's to parse)
    late = [r.args for r in caplog.records if r.msg.startswith("audio late from")]
    assert len(late) == 1
    start, end, worst_ms, _who = cast(tuple[float, float, float, str], late[0])
    assert start == 0.0
    assert end == pytest.approx(0.2)
    assert worst_ms >= behind_s * 1e3


def test_speech_read_from_two_threads_is_the_speech_read_from_one() -> None:
    """The publisher's render thread reads ahead (the articulator's filters, the mouth) while
    the event loop reads and releases the audio: every read gets the samples a lone reader of
    the same seed gets, and phrases are synthesized once each, in order."""
    import threading

    sr, n, seconds = 48000, 480, 20
    shared, alone = SpeechSource(seed=5), SpeechSource(seed=5)
    audio: list[np.ndarray] = []
    mouth: list[float] = []
    errors: list[BaseException] = []
    read_to = [0]  # the renderer's progress: neither thread waits for the other, but what
    # the renderer still reads is never released (the publisher keeps a second behind the audio)

    def read_audio() -> None:
        try:
            for pos in range(0, seconds * sr, n):
                audio.append(shared.samples(pos, n))
                shared.release_before(min(pos, read_to[0]) - sr)
        except BaseException as e:  # the test's failure, reported on the main thread
            errors.append(e)

    def read_ahead() -> None:
        try:
            for k in range(seconds * 25):
                # the renderer reads around each picture's speech instant, ahead of the audio
                shared.samples(int((k / 25 + 0.4) * sr), sr // 100)
                mouth.append(shared.mouth_open(k / 25 + 0.2))
                read_to[0] = int(k / 25 * sr)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=read_audio), threading.Thread(target=read_ahead)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert np.array_equal(np.concatenate(audio), alone.samples(0, seconds * sr))
    assert mouth == [alone.mouth_open(k / 25 + 0.2) for k in range(seconds * 25)]


def test_pictures_are_rendered_off_the_event_loop_and_sent_as_rendered() -> None:
    """A viseme mouth on a nodding head costs milliseconds a picture: rendered on the loop that
    paces the audio, it sent the audio late. The publisher renders in a thread of its own,
    ahead of time, and sends the frames a lone render gives, in order, each on its time."""
    import asyncio
    import threading
    import time

    from livekit import rtc

    from syncmon.reference.articulation import ArticulationConfig
    from syncmon.reference.publisher import ReferencePublisher

    def avatar() -> ReferenceAvatar:
        art = ArticulationConfig(head_px=4.0, head_roll_deg=2.0)
        imp = Impairments(drop_rate=0.05, seed=3)
        return ReferenceAvatar(width=160, height=96, impairments=imp, articulation=art)

    av, twin = avatar(), avatar()
    rendered_on: set[int] = set()
    render = av._render

    def spy(k: int, speech_t: float):  # type: ignore[no-untyped-def]
        rendered_on.add(threading.get_ident())
        return render(k, speech_t)

    av._render = spy  # type: ignore[method-assign]
    pub = ReferencePublisher(av, url="ws://127.0.0.1:1", token="unused", video_start_s=0.2)
    sent: list[tuple[int, bytes, float]] = []

    class Source:  # the real VideoSource, and what reached it
        def __init__(self) -> None:
            self.real = rtc.VideoSource(160, 96)

        def capture_frame(self, frame: rtc.VideoFrame, **kw: object) -> None:
            md = kw["metadata"]
            sent.append((md.frame_id, bytes(frame.data), time.monotonic()))  # type: ignore[attr-defined]
            self.real.capture_frame(frame, **kw)  # type: ignore[arg-type]

    loop_thread: list[int] = []
    duration = 1.2

    async def run() -> float:
        loop_thread.append(threading.get_ident())
        t0 = time.monotonic() + 0.1
        await pub._video(Source(), t0, duration)  # type: ignore[arg-type]
        return t0

    t0 = asyncio.run(run())
    want = [f for f in twin.frames(duration) if f.pts >= 0.2]
    assert [fid for fid, _, _ in sent] == [f.frame_id for f in want]
    assert all(
        data == f.frame.to_i420().tobytes() for (_, data, _), f in zip(sent, want, strict=True)
    )
    assert rendered_on and loop_thread[0] not in rendered_on
    # none before its time (rendering ahead never sends ahead)
    assert all(at >= t0 + f.pts for (_, _, at), f in zip(sent, want, strict=True))
    assert pub.frames_sent == len(want)
