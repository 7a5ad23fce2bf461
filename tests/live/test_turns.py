"""Turns (--turns) through the real livekit-server: a user speaks, the reference avatar answers
after known delays with its picture late by a known offset, and is talked over once."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from syncmon.reference.conversation import conversation
from syncmon.reference.localserver import LocalServer

from .conftest import (
    Proc,
    avatar_report,
    lk_env,
    sample,
    scrape,
    start_monitor,
    start_publisher,
    viewer_truth_ms,
    wait_for,
)
from .prom import Prometheus, await_dashboard_data, dashboard_queries

pytestmark = pytest.mark.slow

DELAYS_MS = (600, 900, 1500)
STOP_MS = 400
OFFSET_MS = 120


def test_response_latency_and_interruption_from_the_rooms_media(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    room, quiet = "turns", "turns-quiet"
    mon = start_monitor(procs, livekit, room, quiet, extra=("--turns",))
    prom = Prometheus([mon.metrics_url.removeprefix("http://")])
    try:
        # the monitor is in the room before the conversation starts (as one dispatched with the
        # agent is)
        wait_for(
            lambda: sample(scrape(mon.metrics_url), "syncmon_room_connected", room=room) == 1,
            timeout=20,
        )
        _, _, truth = conversation(tuple(d / 1000 for d in DELAYS_MS), stop_s=STOP_MS / 1000)
        conv = procs(
            "reference",
            "conversation",
            "--room",
            room,
            "--delays",
            ",".join(map(str, DELAYS_MS)),
            "--stop-ms",
            str(STOP_MS),
            "--offset-ms",
            str(OFFSET_MS),
            env=lk_env(livekit),
        )
        # the other room: an avatar that talks on, and nobody to answer
        start_publisher(procs, livekit, quiet)

        def turns() -> dict[str, object] | None:
            if conv.proc.poll() is not None:
                raise AssertionError(f"the conversation ended early: {conv.proc.returncode}")
            a = avatar_report(mon.metrics_url, room, "avatar")
            return None if a is None else a.get("turns")

        def done() -> bool:
            t = turns()
            return (
                t is not None
                and t["responses"] == {"audio": len(DELAYS_MS), "video": len(DELAYS_MS)}  # type: ignore[index]
                and t["interruptions"] == len(truth.interruption_stops_s)  # type: ignore[index]
            )

        wait_for(done, timeout=truth.duration_s + 40)
        t = turns()
        assert t is not None
        audio = np.array([s for _, s in t["recent_response_s"]["audio"]])  # type: ignore[index]
        video = np.array([s for _, s in t["recent_response_s"]["video"]])  # type: ignore[index]
        want = np.array(truth.responses_s)
        # the user's end of speech to the avatar's voice, within 30 ms of the script
        assert np.max(np.abs(audio - want)) <= 0.030, (audio, want)
        # to its mouth: the voice's time plus the offset a viewer sees (the content method's
        # tolerance on top)
        viewer_s = viewer_truth_ms(mon.metrics_url, room, "avatar", OFFSET_MS) / 1000
        assert np.max(np.abs(video - (want + viewer_s))) <= 0.045, (video, want, viewer_s)
        stops = [s for _, s in t["recent_interruption_stop_s"]]  # type: ignore[index]
        assert len(stops) == 1 and stops[0] is not None
        assert abs(stops[0] - truth.interruption_stops_s[0]) <= 0.030, (stops, truth)

        s = scrape(mon.metrics_url)
        lv = {"room": room, "participant": "avatar"}
        assert sample(s, "syncmon_turn_response_seconds_count", path="audio", **lv) == len(
            DELAYS_MS
        )
        total = sample(s, "syncmon_turn_response_seconds_sum", path="audio", **lv)
        assert total is not None and abs(total - float(audio.sum())) <= 0.002
        assert sample(s, "syncmon_interruptions_total", **lv) == 1
        assert sample(s, "syncmon_interruption_stop_seconds_count", **lv) == 1
        # where nobody speaks to the avatar: followed, nothing counted (started only now: a
        # second avatar's rendering on these 2 cores made the conversation's publisher send
        # its first answer 30-50 ms late)
        start_publisher(procs, livekit, quiet, "--width", "320", "--height", "180")
        wait_for(
            lambda: sample(scrape(mon.metrics_url), "syncmon_track_up", room=quiet), timeout=20
        )
        s = scrape(mon.metrics_url)
        assert sample(s, "syncmon_interruptions_total", room=quiet) == 0
        assert sample(s, "syncmon_turn_response_seconds_count", room=quiet) is None
        # every query of the turn panels, run by a real Prometheus, returns data
        await_dashboard_data(prom, dashboard_queries(room, "avatar", turns=True), timeout=30)
    finally:
        prom.stop()
    assert mon.stop() == 0
