"""Avatar start-up, measured from the room's media: from the room announcing the avatar to its
first sound, its first picture and its first picture that moves with the speech, against what
the avatar itself logged."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

from syncmon.reference import SpeechSource
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
# the first moving picture after the first picture: the join cancels out, and the monitor
# names a frame, of 40 ms at 25 fps
MOVING_TOLERANCE_S = 0.045
STAGES = ("audio", "video", "moving")


def onset_after(t: float, seed: int = 1) -> float:
    """The publisher's (default) speech: its first onset after ``t`` s that follows a pause of
    at least 0.5 s (10 ms blocks above -40 dBFS, as ``ReferenceAvatar.mouth_moves``)."""
    sp = SpeechSource(seed=seed)
    sr = sp.sample_rate
    x = sp.samples(0, int((t + 10) * sr)).astype(np.float64)
    hop = sr // 100
    on = np.sqrt(np.mean(x[: x.size // hop * hop].reshape(-1, hop) ** 2, axis=1)) > 0.01
    for i in range(int(t * 100), on.size):
        if on[i] and not on[i - 50 : i].any():
            return i / 100
    raise AssertionError(f"no onset after a pause between {t} and {t + 10} s")


def logged(pub: Proc) -> dict[str, float]:
    """The avatar's own log: each kind's first frame, seconds after it joined."""
    pub.proc.wait(timeout=60)
    err = pub.log()
    got = {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r"startup: first (audio|video|moving) frame sent ([\d.]+) s after", err
        )
    }
    assert set(got) == set(STAGES), err[-2000:]
    return got


@pytest.mark.parametrize(("audio_s", "video_s", "frozen"), [(0.4, 3.0, True), (1.5, 1.6, False)])
def test_start_up_stages_match_what_the_avatar_logged(
    livekit: LocalServer, procs: Callable[..., Proc], audio_s: float, video_s: float, frozen: bool
) -> None:
    """Each stage within ANNOUNCE_TOLERANCE_S of the avatar's own log; the picture's lag behind
    the voice and the moving picture's behind the first picture closer. ``frozen``: the mouth
    is held shut through the first utterances (until just before an onset after 5 s), so the
    first moving picture comes seconds after the first picture."""
    room = f"startup-{audio_s}-{video_s}"
    still = ["--lip-still", f"0:{onset_after(5.0) - 0.05:.2f}"] if frozen else []
    # (-v: a stage missed shows the monitor's trace of its moving-onset judgement in the log)
    mon = start_monitor(procs, livekit, room, extra=("-v",))
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
        # (the mouth is located by a confident window of what follows the voice: 8 s of it)
        str(video_s + 18),
        *still,
    )

    def stages() -> dict[str, float] | None:
        s = scrape(mon.metrics_url)
        got = {k: sample(s, STARTUP, stage=k) for k in STAGES}
        return None if None in got.values() else got  # type: ignore[return-value]

    measured = wait_for(stages, timeout=60)
    assert isinstance(measured, dict)
    truth = logged(pub)
    # (a miss names the monitor's own account of its moving-onset judgement: its -v log's
    # lines on it, which the log's tail printed after the test may not reach)
    onset = [ln for ln in mon.log().splitlines() if "moving" in ln]
    for k in STAGES:
        assert abs(measured[k] - truth[k]) <= ANNOUNCE_TOLERANCE_S, (k, measured, truth, onset)
    gap, true_gap = measured["video"] - measured["audio"], truth["video"] - truth["audio"]
    assert abs(gap - true_gap) <= GAP_TOLERANCE_S, (measured, truth)
    moved, true_moved = measured["moving"] - measured["video"], truth["moving"] - truth["video"]
    assert abs(moved - true_moved) <= MOVING_TOLERANCE_S, (measured, truth)
    if frozen:
        assert true_moved > 2.0, truth  # the freeze did hold the mouth past the first picture


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
