"""The collector against its own registry: exact values, a complete scrape under concurrent
writers, a broken avatar left out and counted; secrets out of tracebacks."""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import feed_avatar
from prometheus_client import generate_latest

from syncmon import metric_names as n
from syncmon.analysis.session import AnalyzerConfig, SyncAnalyzer
from syncmon.live.state import (
    OVERLOAD_BACKLOG_S,
    OVERLOAD_HOLD_S,
    AvatarState,
    MonitorState,
)
from syncmon.metrics import make_registry
from syncmon.reference import ReferenceAvatar

LUMA = np.full((72, 128), 90, np.uint8)


def avatar(state: MonitorState, room: str, who: str) -> AvatarState:
    rs = state.add_room(room)
    assert rs is not None
    a = AvatarState(room=room, participant=who, analyzer=SyncAnalyzer(audio_rate=16000))
    rs.avatars[who] = a
    return a


def test_collector_exports_exact_values() -> None:
    state = MonitorState(max_rooms=7)
    assert make_registry(state).get_sample_value(n.ROOMS, {}) == 0
    a = avatar(state, "r", "av")
    for k in range(50):
        a.analyzer.add_video(k * 0.04, LUMA + (k % 2))
    a.count_malformed("mark")
    a.count_malformed("mark")
    a.count_restart("audio")
    a.track_up["video"] = True
    reg = make_registry(state)
    lv = {"room": "r", "participant": "av"}
    get = reg.get_sample_value
    assert get(n.VIDEO_FRAMES, lv) == 50
    assert get(n.TRACK_UP, {**lv, "kind": "video"}) == 1
    assert get(n.TRACK_UP, {**lv, "kind": "audio"}) == 0
    assert get(n.MALFORMED, {**lv, "what": "mark"}) == 2
    assert get(n.MALFORMED, {**lv, "what": "frame"}) is None  # never seen: absent, not 0
    assert get(n.TASK_RESTARTS, {**lv, "task": "audio"}) == 1
    assert get(n.COLLECT_ERRORS, {}) == 0
    assert get(n.ROOMS, {}) == 1 and get(n.ROOMS_MAX, {}) == 7
    assert get(n.AV_OFFSET, {**lv, "method": "content"}) is None  # unknown: absent
    assert get(n.VIDEO_FPS, lv) == pytest.approx(25.0, rel=1e-6)
    # a flat picture shows no face: looked for, never found
    assert get(n.FACE_FRAMES, lv) == 0 and get(n.FACE_ERRORS, lv) == 0
    assert get(n.VIEWER_SYNC, lv) is None  # the receiver's stats have not said: absent
    a.analyzer.viewer_sync = False
    assert get(n.VIEWER_SYNC, lv) == 0
    a.analyzer.viewer_sync = True
    assert get(n.VIEWER_SYNC, lv) == 1


def test_the_frames_the_face_was_tracked_in_are_reported_and_exported() -> None:
    """Every frame of the photographic avatar shows its face (offline the detector runs in line
    and finds it at the first frame), a picture of noise none; an analyzer that does not look
    for the face reports null and exports no face series."""
    pics = [f.frame.y for f in ReferenceAvatar(renderer="photo").frames(2.0)]
    noise = np.random.default_rng(3).integers(0, 255, pics[0].shape, dtype=np.uint8)
    state = MonitorState()
    seen = avatar(state, "seen", "av")
    blind = avatar(state, "blind", "av")
    rs = state.add_room("off")
    assert rs is not None
    off = AvatarState(
        room="off", participant="av", analyzer=SyncAnalyzer(AnalyzerConfig(face=False))
    )
    rs.avatars["av"] = off
    for k, y in enumerate(pics):
        seen.analyzer.add_video(k * 0.04, y)
        blind.analyzer.add_video(k * 0.04, noise)
        off.analyzer.add_video(k * 0.04, y)
    assert seen.analyzer.report()["face"] == {"frames": len(pics), "share": 1.0, "errors": 0}
    assert blind.analyzer.report()["face"] == {"frames": 0, "share": 0.0, "errors": 0}
    assert off.analyzer.report()["face"] is None
    get = make_registry(state).get_sample_value
    assert get(n.FACE_FRAMES, {"room": "seen", "participant": "av"}) == len(pics)
    assert get(n.FACE_FRAMES, {"room": "blind", "participant": "av"}) == 0
    assert get(n.VIDEO_FRAMES, {"room": "off", "participant": "av"}) == len(pics)
    assert get(n.FACE_FRAMES, {"room": "off", "participant": "av"}) is None
    assert get(n.FACE_ERRORS, {"room": "off", "participant": "av"}) is None


class _Silent(SyncAnalyzer):
    """An analyzer that hears the same stream with its voice muted."""

    def add_audio(self, samples: np.ndarray, t_start: float | None = None) -> None:
        super().add_audio(np.zeros_like(samples), t_start)


def test_content_windows_are_counted_by_what_they_gave_and_exported() -> None:
    """The reference avatar's mouth follows its voice: every window it speaks in measures an
    offset. The same stream muted: as many windows, none with speech."""
    state = MonitorState()
    talk = avatar(state, "talk", "av")
    rs = state.add_room("mute")
    assert rs is not None
    mute = AvatarState(room="mute", participant="av", analyzer=_Silent(audio_rate=16000))
    rs.avatars["av"] = mute
    feed_avatar(ReferenceAvatar(), 16.0, an=talk.analyzer)
    feed_avatar(ReferenceAvatar(), 16.0, an=mute.analyzer)
    said, quiet = talk.analyzer.content_windows, mute.analyzer.content_windows
    total = sum(said.values())
    assert said["unmeasured"] == 0 and said["measured"] > 0, said
    assert quiet == {"measured": 0, "unmeasured": 0, "no_speech": total}
    assert talk.analyzer.report()["content_windows"] == said
    get = make_registry(state).get_sample_value
    for room, counts in (("talk", said), ("mute", quiet)):
        for result, count in counts.items():
            labels = {"room": room, "participant": "av", "result": result}
            assert get(n.CONTENT_WINDOWS, labels) == count, (room, result)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # makes a race that is rare at the default show at once
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def test_every_scrape_holds_every_avatar_while_their_threads_write(fast_switching: None) -> None:
    """Worker jobs feed their analyzers from their own threads while /metrics renders them."""
    state = MonitorState()
    avatars = [avatar(state, f"room{i}", "av") for i in range(3)]
    stop = threading.Event()

    def feed(a: AvatarState) -> None:
        k = 0
        while not stop.is_set():
            a.analyzer.add_video(k * 0.04, LUMA + (k % 3))
            if k % 7 == 0:
                a.count_malformed("frame")
            k += 1

    threads = [threading.Thread(target=feed, args=(a,)) for a in avatars]
    for t in threads:
        t.start()
    reg = make_registry(state)
    incomplete = 0
    try:
        for _ in range(300):
            text = generate_latest(reg).decode()
            for i in range(3):
                if f'syncmon_video_frames_total{{participant="av",room="room{i}"}}' not in text:
                    incomplete += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert incomplete == 0
    assert reg.get_sample_value(n.COLLECT_ERRORS, {}) == 0


def test_an_avatar_that_cannot_be_read_is_left_out_and_counted() -> None:
    state = MonitorState()
    good = avatar(state, "r", "good")
    bad = avatar(state, "r", "bad")
    good.analyzer.add_video(0.0, LUMA)

    def broken() -> None:
        raise RuntimeError("deque mutated during iteration")

    bad.analyzer.snapshot = broken  # type: ignore[method-assign,assignment]
    reg = make_registry(state)
    for scrape in (1, 2):
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in reg.collect()
            for s in fam.samples
        }
        assert samples[(n.VIDEO_FRAMES, (("participant", "good"), ("room", "r")))] == 1
        assert not [k for k in samples if ("participant", "bad") in k[1]]
        assert samples[(n.COLLECT_ERRORS, ())] == scrape  # each scrape that left one out


def test_tracebacks_are_redacted() -> None:
    from syncmon.logs import RedactingFilter, RedactingFormatter, add_secret

    secret = "s3cr3t-value-that-must-not-leak-0123456789"
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtZSJ9.c2lnbmF0dXJl"
    add_secret(secret)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("syncmon.test.redact")
    log.addHandler(handler)
    try:
        try:
            raise ValueError(f"connect failed with {token} and {secret}")
        except ValueError:
            log.exception("failed: %s", token)
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "Traceback" in text and "ValueError" in text
    assert token not in text and secret not in text
    assert text.count("<token>") == 2 and "<secret>" in text


@pytest.mark.parametrize(
    ("backlog_s", "shed_ago_s", "over"),
    [
        (0.0, None, False),  # in step, never shed
        (0.9, None, False),  # behind, but less than the alert's second
        (OVERLOAD_BACKLOG_S + 0.2, None, True),
        (0.0, 10.0, True),  # caught up after a shed, within the hold
        (0.0, OVERLOAD_HOLD_S + 1.0, False),  # a shed long ago
    ],
)
def test_a_worker_behind_its_pictures_reports_itself_full(
    backlog_s: float, shed_ago_s: float | None, over: bool
) -> None:
    """The load a worker reports to dispatch is its share of the room cap -- or full while a
    monitor is behind its picture by more than OVERLOAD_BACKLOG_S or shed frames within
    OVERLOAD_HOLD_S; its /metrics says which."""
    st = MonitorState(max_rooms=4)
    rs = st.add_room("r")
    assert rs is not None
    a = AvatarState(room="r", participant="av", analyzer=SyncAnalyzer())
    rs.avatars["av"] = a
    a.backlog_s = backlog_s
    a.last_shed_at = None if shed_ago_s is None else time.monotonic() - shed_ago_s
    assert st.overloaded() is over
    assert st.load() == (1.0 if over else 0.25)
    text = generate_latest(make_registry(st)).decode()
    assert f"{n.OVERLOADED} {1.0 if over else 0.0}" in text
