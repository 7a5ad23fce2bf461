"""Avatar start-up, measured from the room's media: from the room announcing the avatar to its
first sound and its first picture, against what the avatar itself logged."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from syncmon.reference.localserver import LocalServer

from .conftest import (
    Proc,
    participants,
    sample,
    scrape,
    start_monitor,
    start_publisher,
    wait_for,
)

pytestmark = pytest.mark.slow
STARTUP = "syncmon_avatar_startup_seconds"
# the room announces a participant once its connection is up, tens of ms after the avatar's
# own connect() returned (measured 30-70 ms on loopback), and each first frame reaches the
# monitor a transport delay after it left: one stage alone is within this of the avatar's log
ANNOUNCE_TOLERANCE_S = 0.1
GAP_TOLERANCE_S = 0.030  # video after audio: the join cancels out


def logged(pub: Proc) -> dict[str, float]:
    """The avatar's own log: each kind's first frame, seconds after it joined."""
    pub.proc.wait(timeout=60)
    err = pub.proc.stderr.read() if pub.proc.stderr else ""
    got = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"startup: first (audio|video) frame sent ([\d.]+) s after", err)
    }
    assert set(got) == {"audio", "video"}, err[-2000:]
    return got


@pytest.mark.parametrize(("audio_s", "video_s"), [(0.4, 3.0), (1.5, 1.6)])
def test_start_up_stages_match_what_the_avatar_logged(
    livekit: LocalServer, procs: Callable[..., Proc], audio_s: float, video_s: float
) -> None:
    room = f"startup-{audio_s}-{video_s}"
    mon = start_monitor(procs, livekit, room)
    wait_for(lambda: sample(scrape(mon.metrics_url), "syncmon_room_connected") == 1, timeout=30)
    pub = start_publisher(
        procs,
        livekit,
        room,
        "--width",
        "320",
        "--height",
        "180",
        "--audio-start-s",
        str(audio_s),
        "--video-start-s",
        str(video_s),
        "--duration",
        str(video_s + 4),
    )

    def stages() -> dict[str, float] | None:
        s = scrape(mon.metrics_url)
        got = {k: sample(s, STARTUP, stage=k) for k in ("audio", "video")}
        return None if None in got.values() else got  # type: ignore[return-value]

    measured = wait_for(stages, timeout=60)
    assert isinstance(measured, dict)
    truth = logged(pub)
    for k in ("audio", "video"):
        assert abs(measured[k] - truth[k]) <= ANNOUNCE_TOLERANCE_S, (k, measured, truth)
    gap, true_gap = measured["video"] - measured["audio"], truth["video"] - truth["audio"]
    assert abs(gap - true_gap) <= GAP_TOLERANCE_S, (measured, truth)


def test_an_avatar_that_was_there_before_the_monitor_has_no_start_up(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    room = "startup-before"
    start_publisher(procs, livekit, room, "--width", "320", "--height", "180")
    # the monitor joins only once the avatar is in the room (a slow publisher start would
    # otherwise join after it, and its start-up is then rightly measured)
    wait_for(lambda: "avatar" in participants(livekit, room), timeout=60)
    mon = start_monitor(procs, livekit, room)

    def counting() -> bool:
        return (sample(scrape(mon.metrics_url), "syncmon_video_frames_total") or 0) > 50

    wait_for(counting, timeout=60)
    assert sample(scrape(mon.metrics_url), STARTUP) is None
