"""A monitor whose host is short of CPU, through the real livekit-server: it stays within
MAX_BACKLOG_S of the picture (shedding what it holds, counted as its own), blames nothing on
the avatar, and says so.

The one fake here is the host: the monitor's analysis of each frame is slowed to 80 ms (twice
a 25 fps frame's interval), as on a host with twice the rooms it can analyse; everything else
(the server, the publisher, the monitor's streams, its /metrics, agent dispatch) is real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from syncmon.live.avatar import MAX_BACKLOG_S
from syncmon.reference.localserver import LocalServer, free_port

from .conftest import (
    Proc,
    ProcessDied,
    dispatch,
    lk_env,
    rooms_of,
    sample,
    scrape,
    start_monitor,
    start_publisher,
    start_worker,
    visible,
    wait_for,
)

SLOW_WATCH = """
import sys, time
from syncmon.analysis.session import SyncAnalyzer
real = SyncAnalyzer.add_video
def slow(self, *a, **k):
    time.sleep(0.08)
    return real(self, *a, **k)
SyncAnalyzer.add_video = slow
from syncmon.cli import main
sys.exit(main(sys.argv[1:]))
"""

# livekit-server's log (at info) when no worker will take a job: no node whose workers have
# room answers the request ("no servers available"), or one answered and then found no worker
# with room ("no workers with sufficient capacity"); either way the client side logs this
NOT_OFFERED = rb'failed to send job request\t.*"agentName": "syncmon-busy"'

# the same for every Python process started with this file's directory on PYTHONPATH: a
# worker's processes are spawned, not forked, and import syncmon afresh
SLOW_SITE = """
import os, time
from syncmon.analysis.session import SyncAnalyzer
real = SyncAnalyzer.add_video
def slow(self, *a, **k):
    time.sleep(float(os.environ["SYNCMON_TEST_SLOW_ANALYSIS_S"]))
    return real(self, *a, **k)
SyncAnalyzer.add_video = slow
"""


def test_a_monitor_short_of_cpu_stays_near_the_picture_and_blames_nothing_on_the_avatar(
    livekit: LocalServer, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    room = "overload"
    port = free_port()
    log = tmp_path / "slow-watch.log"
    with log.open("w") as err:
        mon = subprocess.Popen(
            [sys.executable, "-c", SLOW_WATCH, "watch", "--room", room]
            + ["--metrics-addr", f"127.0.0.1:{port}"],
            env=lk_env(livekit),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        # the truth of what the avatar's stream did: an ordinary monitor on the same room (on a
        # busy host the publisher's encoder may itself drop a frame, which a viewer misses too)
        truth = start_monitor(procs, livekit, room)
        start_publisher(procs, livekit, room, "--width", "320", "--height", "180")
        url = f"http://127.0.0.1:{port}"
        who = {"room": room, "participant": "avatar"}

        def shed() -> float:
            if mon.poll() is not None:
                raise AssertionError(f"the monitor exited: {log.read_text()[-2000:]}")
            return sample(scrape(url), "syncmon_monitor_frames_shed_total", **who) or 0.0

        # analysing at half the frame rate, it passes MAX_BACKLOG_S about 4 s after the first
        # frame (and each time it has shed and started afresh): a shed drops what is queued,
        # MAX_BACKLOG_S of frames at 25 fps
        first = float(cast(float, wait_for(shed, timeout=60)))
        assert first >= 0.8 * MAX_BACKLOG_S * 25, first
        lags: list[float] = []

        def two_more_sheds() -> bool:
            s = scrape(url)
            lag = sample(s, "syncmon_monitor_backlog_seconds", **who)
            assert lag is not None
            lags.append(lag)
            return shed() >= 3 * first

        wait_for(two_more_sheds, timeout=40, every=0.25)
        s = scrape(url)
        # (after the slowed monitor's: it has seen only frames the ordinary one saw before)
        t = scrape(truth.metrics_url)
        # never further behind than the limit and the frame that passed it (without shedding
        # it fell 0.5 s further behind every second, and its frames piled up in memory)
        assert max(lags) <= MAX_BACKLOG_S + 0.2, lags
        assert max(lags) > 0.5, lags  # and it was behind: the lag is measured, not zero
        # the frames it did not analyse are not the avatar's drops, freezes or pauses: it
        # counts none the ordinary monitor did not (it may miss one inside what it shed)
        assert sample(t, "syncmon_monitor_frames_shed_total", **who) == 0.0
        for name in (
            "syncmon_video_frames_dropped_total",
            "syncmon_video_freezes_total",
            "syncmon_video_pauses_total",
        ):
            counted, happened = sample(s, name, **who), sample(t, name, **who)
            assert counted is not None and happened is not None, name
            assert counted <= happened, (name, counted, happened)
        assert (sample(s, "syncmon_video_frames_total", **who) or 0) > 0
        assert "behind the picture of avatar in room overload" in log.read_text()
    finally:
        mon.terminate()
        mon.wait(timeout=10)


@pytest.fixture
def chatty_livekit() -> Iterator[LocalServer]:
    """A server of its own whose log says what dispatch did with each agent job."""
    with LocalServer.start(log_level="info") as srv:
        yield srv


def test_a_worker_whose_processes_fall_behind_reports_itself_full_and_refuses_rooms(
    chatty_livekit: LocalServer, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """``syncmon worker --processes 2`` on a host that analyses at half the frame rate: its
    parent hears from the process holding the room that it sheds, says so on /metrics
    (``syncmon_overloaded``), reports itself full to dispatch, and so takes no new room (one
    offered to it before its load reached the server it refuses, counted and logged) rather
    than make every room's figures worse."""
    (tmp_path / "sitecustomize.py").write_text(SLOW_SITE)
    env = {
        **lk_env(chatty_livekit),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
        "SYNCMON_TEST_SLOW_ANALYSIS_S": "0.08",
    }
    busy, more = "busy-1", "busy-2"
    for i, room in enumerate((busy, more)):
        start_publisher(
            procs, chatty_livekit, room, "--width", "320", "--height", "180", identity=f"avatar{i}"
        )
    w = start_worker(procs, chatty_livekit, "syncmon-busy", "2", env=env)
    wait_for(lambda: scrape(w.metrics_url) is not None, timeout=60)
    assert sample(scrape(w.metrics_url), "syncmon_overloaded") == 0.0  # nothing to fall behind
    wait_for(lambda: visible(chatty_livekit, busy) and visible(chatty_livekit, more), timeout=60)
    dispatch(chatty_livekit, [busy], "syncmon-busy")

    def overloaded() -> bool:
        if w.proc.poll() is not None:
            raise ProcessDied(f"the worker exited ({w.proc.returncode}): {w.log()[-3000:]}")
        s = scrape(w.metrics_url)
        shed = sample(s, "syncmon_monitor_frames_shed_total", room=busy, participant="avatar0")
        return (shed or 0) > 0 and sample(s, "syncmon_overloaded") == 1.0

    wait_for(overloaded, timeout=90)
    assert sample(scrape(w.metrics_url), "syncmon_rooms_rejected_total") == 0
    server_log = Path(chatty_livekit.workdir) / "server.log"
    seen = len(server_log.read_bytes())
    dispatch(chatty_livekit, [more], "syncmon-busy")

    def turned_away() -> str | None:
        # the server offers the room to no worker whose load says full (within the agents
        # SDK's 0.5 s load report); one offered before that is refused by the worker itself
        if sample(scrape(w.metrics_url), "syncmon_rooms_rejected_total") == 1:
            return "refused"
        if re.search(NOT_OFFERED, server_log.read_bytes()[seen:]):
            return "not offered"
        return None

    how = wait_for(turned_away, timeout=30)
    assert rooms_of(w.metrics_url) == {busy}
    assert ("refused a room" in w.log()) == (how == "refused"), (how, w.log()[-2000:])
