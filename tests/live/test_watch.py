"""syncmon watch against the real livekit-server on loopback, with the reference publisher."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from syncmon.reference.localserver import LocalServer

from .conftest import (
    Proc,
    avatar_report,
    sample,
    scrape,
    start_monitor,
    start_publisher,
    viewer_truth_ms,
    wait_for,
)

pytestmark = pytest.mark.slow


def content_offset(url: str, room: str) -> float | None:
    return sample(scrape(url), "syncmon_av_offset_seconds", room=room, method="content")


@pytest.mark.parametrize("offset_ms", [80, -120])
def test_content_offset_within_25ms_of_injected_truth(
    livekit: LocalServer, procs: Callable[..., Proc], offset_ms: int
) -> None:
    room = f"offset{offset_ms}"
    mon = start_monitor(procs, livekit, room)
    start_publisher(procs, livekit, room, "--offset-ms", str(offset_ms), "--duration", "40")
    t0 = time.monotonic()
    wait_for(lambda: content_offset(mon.metrics_url, room) is not None, timeout=25)
    first_s = time.monotonic() - t0
    # the receiver's jitter-buffer compensation settles over the first stats polls (5 s apart):
    # read from 15 s of speech on, as the requirement says
    time.sleep(max(0.0, 15.0 - first_s))
    readings = []
    for _ in range(6):
        # what a viewer plays (this server's default: each track as it arrives)
        truth = viewer_truth_ms(mon.metrics_url, room, "avatar", offset_ms)
        readings.append((content_offset(mon.metrics_url, room), truth))
        time.sleep(1.0)
    errs = [abs(r * 1000 - truth) for r, truth in readings if r is not None]
    assert len(errs) == 6, readings
    assert max(errs) <= 25, f"offsets and truths {readings} (sent {offset_ms} ms)"
    assert first_s <= 20, f"first estimate after {first_s:.1f} s"
    s = scrape(mon.metrics_url)
    assert sample(s, "syncmon_room_connected", room=room) == 1
    assert sample(s, "syncmon_track_up", room=room, kind="video") == 1
    assert sample(s, "syncmon_track_up", room=room, kind="audio") == 1
    assert sample(s, "syncmon_av_offset_confidence", room=room, method="content") >= 0.3
    assert mon.stop() == 0


def test_freezes_and_drops_counted_from_frame_ids(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    room = "impaired"
    mon = start_monitor(procs, livekit, room)
    pub = start_publisher(
        procs,
        livekit,
        room,
        "--duration",
        "22",
        "--freeze",
        "6:0.6",
        "--freeze",
        "14:0.6",
        "--drop-rate",
        "0.05",
        "--seed",
        "5",
    )
    from syncmon.reference import Impairments, ReferenceAvatar

    truth = ReferenceAvatar(
        impairments=Impairments(freezes=((6, 0.6), (14, 0.6)), drop_rate=0.05, seed=5)
    ).truth(22.0)
    assert pub.proc.wait(timeout=60) == 0
    # the counters are final once the monitor has seen the avatar's video go (its series stay
    # for the linger)
    wait_for(
        lambda: sample(scrape(mon.metrics_url), "syncmon_track_up", room=room, kind="video") == 0,
        timeout=15,
    )
    s = scrape(mon.metrics_url)
    assert sample(s, "syncmon_video_freezes_total", room=room) == 2
    assert sample(s, "syncmon_video_freeze_seconds_total", room=room) == pytest.approx(1.2, abs=0.1)
    dropped = sample(s, "syncmon_video_frames_dropped_total", room=room)
    assert dropped is not None and abs(dropped - truth.dropped) <= 1, (dropped, truth.dropped)
    frames = sample(s, "syncmon_video_frames_total", room=room)
    # the first frames go out before the subscription and its first keyframe (no impairment
    # is injected in those first 40 slots)
    assert frames is not None and truth.frames - 25 <= frames <= truth.frames


def test_two_rooms_two_avatars_labels_kept_apart(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    # (-v: a miss shows the monitor's jitter-buffer polls, the receiver bias's history, in the
    # log, and the assertions carry each avatar's report: the viewer truth rests on that bias)
    mon = start_monitor(procs, livekit, "room-a", "room-b", extra=("-v",))
    start_publisher(
        procs, livekit, "room-a", "--offset-ms", "60", "--duration", "40", identity="ava"
    )
    start_publisher(
        procs,
        livekit,
        "room-b",
        "--offset-ms",
        "-100",
        "--duration",
        "40",
        identity="avb",
    )

    def both() -> bool:
        return (
            content_offset(mon.metrics_url, "room-a") is not None
            and content_offset(mon.metrics_url, "room-b") is not None
        )

    t0 = time.monotonic()
    wait_for(both, timeout=30)
    # as in the single-room test: read from 15 s of speech on
    time.sleep(max(0.0, 15.0 - (time.monotonic() - t0)))
    s = scrape(mon.metrics_url)
    a = sample(s, "syncmon_av_offset_seconds", room="room-a", participant="ava", method="content")
    b = sample(s, "syncmon_av_offset_seconds", room="room-b", participant="avb", method="content")
    truth_a = viewer_truth_ms(mon.metrics_url, "room-a", "ava", 60)
    truth_b = viewer_truth_ms(mon.metrics_url, "room-b", "avb", -100)
    rep_a, rep_b = (
        avatar_report(mon.metrics_url, r, i) for r, i in (("room-a", "ava"), ("room-b", "avb"))
    )
    assert a is not None and abs(a * 1000 - truth_a) <= 25, (a, truth_a, rep_a)
    assert b is not None and abs(b * 1000 - truth_b) <= 25, (b, truth_b, rep_b)
    assert sample(s, "syncmon_video_frames_total", room="room-a", participant="avb") is None
    assert sample(s, "syncmon_video_frames_total", room="room-b", participant="ava") is None


def test_server_restart_reconnects_and_measures_again(procs: Callable[..., Proc]) -> None:
    srv = LocalServer.start(build=False)
    try:
        room = "restart"
        mon = start_monitor(procs, srv, room)
        start_publisher(procs, srv, room, "--duration", "60")
        wait_for(lambda: sample(scrape(mon.metrics_url), "syncmon_video_frames_total"), 20)
        srv.kill()
        wait_for(
            lambda: sample(scrape(mon.metrics_url), "syncmon_room_connected", room=room) == 0,
            timeout=30,
        )
        # /metrics keeps answering while the server is down
        assert sample(scrape(mon.metrics_url), "syncmon_room_connected", room=room) == 0
        time.sleep(5)  # the fault: the server is down for 5 s (the SDK's retries back off)
        srv.restart()
        # the publisher died with the server: one joins at once, before the monitor's SDK has
        # rejoined (it then learns of it from its join response, with no participant event),
        # one after
        start_publisher(procs, srv, room, "--duration", "40", identity="avatar2")
        wait_for(
            lambda: sample(scrape(mon.metrics_url), "syncmon_room_connected", room=room) == 1,
            timeout=40,
        )
        start_publisher(procs, srv, room, "--duration", "40", identity="avatar3")

        def frames(who: str) -> float:
            return (
                sample(scrape(mon.metrics_url), "syncmon_video_frames_total", participant=who) or 0
            )

        # both measured: frames flow again
        wait_for(lambda: frames("avatar2") > 50 and frames("avatar3") > 50, timeout=30)
        s = scrape(mon.metrics_url)
        assert (sample(s, "syncmon_reconnects_total", room=room) or 0) >= 1
    finally:
        srv.stop()


# the most what a viewer played may move over an estimate's window for the estimate to be judged
# against it (the judged error's bound is 25 ms)
TRUTH_SPAN_MS = 30.0


def test_content_offset_follows_the_mouth_of_a_nodding_viseme_avatar(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    """A viseme mouth with its own phase on a head that nods and rolls with the speech,
    leading it by 200 ms: ``content`` must follow the mouth, not the head. Judged on the change:
    the live offset minus the same face's natural phase (measured offline, no codec, at 0 ms)
    against the injected +80 ms."""
    import argparse

    from syncmon.cli.lab import build_avatar

    face = ("--viseme", "--head-motion-px", "4", "--head-roll-deg", "2", "--head-lead-ms", "200")
    args = argparse.Namespace(
        offset_ms=0.0, jitter_ms=0.0, drop_rate=0.0, duplicate_rate=0.0, freeze=[],
        audio_gap=[], clock_drift_ppm=0.0, processing_delay_ms=0.0, seed=0, wav=None,
        lip_still=[], face="synthetic", viseme=True, head_motion_px=4.0, head_roll_deg=2.0,
        head_lead_ms=200.0, width=640, height=360, fps=25.0,
    )  # fmt: skip
    from conftest import feed_avatar

    natural = feed_avatar(build_avatar(args), 24.0).content_median.median_ms()
    assert natural is not None and abs(natural) < 60, natural  # the mouth's, not the head's

    room = "nodding"
    mon = start_monitor(procs, livekit, room)
    start_publisher(procs, livekit, room, "--offset-ms", "80", "--duration", "75", *face)
    wait_for(lambda: content_offset(mon.metrics_url, room) is not None, timeout=30)

    # the receiver's compensation settles over the first stats polls: read once the monitor's
    # own report has published estimates for a while (one per second)
    def estimates() -> int:
        import json
        import urllib.request

        with urllib.request.urlopen(mon.metrics_url + "/report", timeout=5) as r:
            rep = json.loads(r.read())
        return int(rep["rooms"][room]["avatars"]["avatar"]["content_estimates"])

    wait_for(lambda: estimates() >= 8, timeout=30)
    readings = []
    # what a viewer plays of the 80 ms sent (this server: each track as it arrives) moves with
    # the receiver's jitter buffers, by 20-30 ms within seconds at times: an estimate over an
    # 8 s window is judged against what the viewer played over that window, the mean of the
    # last 8 readings (one per estimate; the first 7 only read it). Where those moved by more
    # than TRUTH_SPAN_MS, the viewer played no one offset over the window and the estimate is
    # not judged: the monitor's NetEq now and then grows its audio delay by ~90 ms within
    # seconds (docs/live-tests.md), and one CI run's six readings all fell in such a slide,
    # another's eight windows in 30 s (each moved by 9-59 ms): up to 50 s are read for six
    played: list[float] = []
    moving: list[tuple[float, float]] = []  # (lowest, highest) of the windows not judged
    deadline = time.monotonic() + 50.0  # the publisher runs 75 s
    while len(readings) < 6 and time.monotonic() < deadline:
        played.append(viewer_truth_ms(mon.metrics_url, room, "avatar", 80))
        if len(played) >= 8:
            window = played[-8:]
            if max(window) - min(window) <= TRUTH_SPAN_MS:
                readings.append((content_offset(mon.metrics_url, room), sum(window) / 8))
            else:
                moving.append((min(window), max(window)))
        n, until = estimates(), time.monotonic() + 3.0
        while estimates() <= n and time.monotonic() < until:  # the next estimate (1 s hop)
            time.sleep(0.2)
    errs = [r * 1000 - natural - truth for r, truth in readings if r is not None]
    assert len(errs) >= 4, (readings, f"windows whose truth moved: {moving}")
    assert max(abs(e) for e in errs) <= 25, f"{readings} (natural phase {natural} ms)"
    # a mouth that moves, with a head that nods, is never counted still
    assert lip_still(mon.metrics_url, room) == 0.0
    assert mon.stop() == 0


def lip_still(url: str, room: str) -> float | None:
    return sample(scrape(url), "syncmon_lip_still_seconds_total", room=room)


def test_a_mouth_frozen_from_the_start_is_counted_still_through_the_server(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    """The photographic face, nodding with its speech, whose mouth never moves: no offset,
    and its speaking seconds counted still (the face is found without any motion)."""
    room = "frozen-mouth"
    mon = start_monitor(procs, livekit, room, extra=("--face",))
    face = ("--face", "photo", "--viseme", "--head-motion-px", "4", "--head-roll-deg", "2")
    start_publisher(procs, livekit, room, "--duration", "40", "--lip-still", "0:100", *face)
    # well over half of the first 25 s is speech; the estimator judges a window behind
    wait_for(lambda: (lip_still(mon.metrics_url, room) or 0.0) >= 8.0, timeout=30)
    s = scrape(mon.metrics_url)
    assert (sample(s, "syncmon_lip_still_episodes_total", room=room) or 0) >= 1
    assert sample(s, "syncmon_av_offset_seconds", room=room, method="content") is None
    assert mon.stop() == 0


def test_a_photographic_mouth_held_shut_mid_speech_on_a_nodding_head_is_counted_through_the_server(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    """The case the face's measure missed before it registered the face: a photographic mouth
    held shut for 4 s mid-speech while the head nods and rolls with the speech. Counted as one
    episode of the speaking seconds inside the freeze (the avatar's own truth), within 0.5 s
    (the bench's edges are within 0.3 s; live, frames arrive with jitter and the odd loss)."""
    from syncmon.reference import SpeechSource
    from syncmon.reference.avatar import speaking_seconds

    freeze = (12.0, 4.0)
    # the publisher's voice: seed 0 speaks SpeechSource(seed=1), with consonants (--viseme)
    truth = speaking_seconds(SpeechSource(seed=1, consonants=True), (freeze,))
    assert truth > 1.5, truth  # enough speech inside to be an episode
    room = "held-shut"
    mon = start_monitor(procs, livekit, room, extra=("--face",))
    face = ("--face", "photo", "--viseme", "--head-motion-px", "4", "--head-roll-deg", "2")
    pub = start_publisher(
        procs, livekit, room, "--duration", "30", "--lip-still", f"{freeze[0]}:{freeze[1]}", *face
    )
    # the freeze ends 16 s in; the estimator judges a window's frames about a second behind
    wait_for(lambda: (lip_still(mon.metrics_url, room) or 0.0) >= truth - 0.5, timeout=40)
    # and nothing more is added once the mouth moves again: read after the avatar has spoken
    # on to the end of its 30 s and left
    wait_for(lambda: pub.proc.poll() is not None, timeout=40)
    s = scrape(mon.metrics_url)
    counted = sample(s, "syncmon_lip_still_seconds_total", room=room)
    assert counted is not None and abs(counted - truth) <= 0.5, (counted, truth)
    assert sample(s, "syncmon_lip_still_episodes_total", room=room) == 1
    assert mon.stop() == 0


def test_a_mouth_frozen_until_the_avatar_leaves_is_counted_to_its_last_frame(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    """A freeze still going on when the avatar leaves: live, a frame is judged 0.6-2.6 s after
    it arrives, and the frames the last windows left are judged when the picture ends (without
    that, the last seconds of frozen speech went uncounted: this clip speaks 1.98 of its last
    2 s)."""
    from syncmon.reference import SpeechSource
    from syncmon.reference.avatar import speaking_seconds

    duration, freeze = 24.0, (18.0, 6.0)
    truth = speaking_seconds(SpeechSource(seed=1, consonants=True), (freeze,))
    last_2s = speaking_seconds(SpeechSource(seed=1, consonants=True), ((duration - 2, 2.0),))
    assert truth > 3.0 and last_2s > 1.5, (truth, last_2s)  # what the case needs of the voice
    room = "frozen-to-the-end"
    mon = start_monitor(procs, livekit, room, extra=("--face",))
    face = ("--face", "photo", "--viseme", "--head-motion-px", "4", "--head-roll-deg", "2")
    pub = start_publisher(
        procs,
        livekit,
        room,
        "--duration",
        str(duration),
        "--lip-still",
        f"{freeze[0]}:{freeze[1]}",
        *face,
    )
    wait_for(lambda: pub.proc.poll() is not None, timeout=60)
    # the avatar's picture has ended once the monitor reports its video down (its series
    # linger on for the scrape)
    wait_for(
        lambda: sample(scrape(mon.metrics_url), "syncmon_track_up", room=room, kind="video") == 0,
        timeout=20,
    )
    s = scrape(mon.metrics_url)
    counted = sample(s, "syncmon_lip_still_seconds_total", room=room)
    assert counted is not None and abs(counted - truth) <= 0.5, (counted, truth)
    assert sample(s, "syncmon_lip_still_episodes_total", room=room) == 1
    assert mon.stop() == 0
