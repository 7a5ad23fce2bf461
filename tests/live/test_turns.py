"""Turns (--turns) through the real livekit-server: a user speaks, the reference avatar answers
after known delays with its picture late by a known offset, and is talked over once."""

from __future__ import annotations

import re
import time
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
# a late frame holds back what follows it until the receiver's buffer has caught up
CATCH_UP_S = 2.0
_LATE = re.compile(r"audio late from ([0-9.]+) to ([0-9.]+) s, at most ([0-9]+) ms \((\w+)\)")


def late_stretches(log: str) -> list[tuple[float, float, float, str]]:
    """The conversation publisher's late-sent audio: (from, to, worst lateness in seconds,
    identity), on the script's timeline."""
    return [(float(a), float(b), float(ms) / 1000, who) for a, b, ms, who in _LATE.findall(log)]


def late_near(
    stretches: list[tuple[float, float, float, str]], user_edge: float, avatar_edge: float
) -> float:
    """The worst lateness of either side's audio in the CATCH_UP_S before its edge."""
    edge = {"user": user_edge, "avatar": avatar_edge}
    return max(
        (late for a, b, late, who in stretches if edge[who] - CATCH_UP_S <= b and a <= edge[who]),
        default=0.0,
    )


def test_response_latency_and_interruption_from_the_rooms_media(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    room, quiet = "turns", "turns-quiet"
    mon = start_monitor(procs, livekit, room, quiet, extra=("--turns",))
    since = time.time()
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
        # the script's times are the room's unless the publisher sent late near an edge (it
        # says so: its source has no queue): that lateness is allowed on top
        stretches = late_stretches(conv.log())
        late = np.array([late_near(stretches, u, a) for u, a in truth.turn_edges_s])
        # the user's end of speech to the avatar's voice, within 30 ms of the script
        assert np.all(np.abs(audio - want) <= 0.030 + late), (audio, want, late, stretches)
        # to its mouth: the voice's time plus the offset a viewer sees (the content method's
        # tolerance on top)
        viewer_s = viewer_truth_ms(mon.metrics_url, room, "avatar", OFFSET_MS) / 1000
        assert np.all(np.abs(video - (want + viewer_s)) <= 0.045 + late), (
            video,
            want,
            viewer_s,
            late,
        )
        stops = [s for _, s in t["recent_interruption_stop_s"]]  # type: ignore[index]
        assert len(stops) == 1 and stops[0] is not None
        (u_on, a_off), stop = truth.interruption_edges_s[0], truth.interruption_stops_s[0]
        assert abs(stops[0] - stop) <= 0.030 + late_near(stretches, u_on, a_off), (
            stops,
            truth,
            stretches,
        )

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
        await_dashboard_data(prom, dashboard_queries(room, "avatar", turns=True), since, timeout=30)
    finally:
        prom.stop()
    assert mon.stop() == 0
