"""syncmon worker: LiveKit's agent dispatch spreads one monitor job per room over workers."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncmon.reference.localserver import LocalServer, free_port

from .conftest import (
    Proc,
    ProcessDied,
    dispatch,
    lk_env,
    rooms_of,
    sample,
    scrape,
    start_publisher,
    start_worker,
    visible,
    wait_for,
)

pytestmark = pytest.mark.slow
# four rooms dispatched at once to two workers: each monitored exactly once
ROOMS = [f"w-room-{i}" for i in range(1, 5)]


def test_four_rooms_two_workers_each_room_monitored_once_and_unseen(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    workers = []
    # one worker runs its rooms as threads, the other in two processes: both serve every room
    # they hold on their one /metrics
    for processes in ("1", "2"):
        workers.append(start_worker(procs, livekit, "syncmon-test", processes))
    for i, r in enumerate(ROOMS):
        start_publisher(
            procs,
            livekit,
            r,
            "--duration",
            "60",
            "--width",
            "320",
            "--height",
            "180",
            identity=f"avatar{i}",
        )
    wait_for(lambda: all(scrape(w.metrics_url) is not None for w in workers), timeout=20)
    # dispatch once every room has its avatar (slow to start when the machine is loaded)
    wait_for(lambda: all(visible(livekit, r) for r in ROOMS), timeout=60)
    dispatch(livekit, ROOMS, "syncmon-test")

    def spread() -> bool:
        for w in workers:
            if w.proc.poll() is not None:
                raise ProcessDied(f"a worker exited ({w.proc.returncode}): {w.log()[-3000:]}")
        a, b = (rooms_of(w.metrics_url) for w in workers)
        return (a | b) == set(ROOMS)

    wait_for(spread, timeout=90)
    a, b = (rooms_of(w.metrics_url) for w in workers)
    assert a & b == set(), f"rooms monitored twice: {a & b}"
    assert len(a) + len(b) == len(ROOMS)
    # both workers serve /metrics (a worker with no room answers too); each measures its rooms
    for w in workers:
        assert sample(scrape(w.metrics_url), "syncmon_rooms_rejected_total") == 0
    for w, rooms in zip(workers, (a, b), strict=True):
        for r in rooms:
            wait_for(
                lambda w=w, r=r: (
                    (sample(scrape(w.metrics_url), "syncmon_video_frames_total", room=r) or 0) > 25
                ),
                timeout=30,
            )
    # the monitor jobs are invisible to frontends: no visible participant of theirs
    for i, r in enumerate(ROOMS):
        assert visible(livekit, r) == [f"avatar{i}"]
    # and nothing is lost or doubled once the rooms settle
    a2, b2 = (rooms_of(w.metrics_url) for w in workers)
    assert (a2, b2) == (a, b)
    # the load each reports (what an autoscaler scales on): its rooms
    for w, rooms in zip(workers, (a, b), strict=True):
        assert sample(scrape(w.metrics_url), "syncmon_rooms") == len(rooms)
    for w in workers:
        assert w.stop() == 0


def report(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/report", timeout=5) as r:
        return dict(json.loads(r.read()))


def test_a_worker_spreads_its_rooms_over_processes_and_survives_one_dying(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    w = start_worker(procs, livekit, "syncmon-pool", "2")
    rooms = [f"p-room-{i}" for i in range(1, 5)]
    for i, r in enumerate(rooms):
        start_publisher(
            procs, livekit, r, "--width", "320", "--height", "180", identity=f"avatar{i}"
        )
    wait_for(lambda: scrape(w.metrics_url) is not None, timeout=60)
    wait_for(lambda: all(visible(livekit, r) for r in rooms), timeout=60)
    dispatch(livekit, rooms, "syncmon-pool")

    def counting(url: str, want: set[str]) -> bool:
        if w.proc.poll() is not None:
            raise ProcessDied(f"the worker exited ({w.proc.returncode})")
        s = scrape(url)
        return rooms_of(url) == want and all(
            (sample(s, "syncmon_video_frames_total", room=r) or 0) > 25 for r in want
        )

    wait_for(lambda: counting(w.metrics_url, set(rooms)), timeout=90)
    procs_ = report(w.metrics_url)["processes"]
    # the rooms go to the process with the fewest: two each, in two processes of their own
    assert sorted(len(p["rooms"]) for p in procs_) == [2, 2], procs_
    pids = {p["pid"] for p in procs_}
    assert len(pids) == 2 and w.proc.pid not in pids
    assert sorted(sum((p["rooms"] for p in procs_), [])) == sorted(rooms)
    s = scrape(w.metrics_url)
    assert sample(s, "syncmon_rooms") == len(rooms)
    assert sample(s, "syncmon_worker_processes") == 2
    assert sample(s, "syncmon_collect_errors_total") == 0
    # each room's series once (a room is one process's), the worker-wide ones once
    assert sum(1 for (n, _lv) in s if n == "syncmon_rooms") == 1
    for r in rooms:
        assert sum(1 for (n, lv) in s if n == "syncmon_room_connected" and ("room", r) in lv) == 1

    # a process dies: its rooms go to the other one, and it is started again and counted
    victim = procs_[0]
    os.kill(victim["pid"], signal.SIGKILL)

    def recovered() -> bool:
        rep = report(w.metrics_url)["processes"]
        s = scrape(w.metrics_url)
        return (
            all(p["up"] for p in rep)
            and victim["pid"] not in {p["pid"] for p in rep}
            and sample(s, "syncmon_task_restarts_total", task="worker_process") == 1
            and counting(w.metrics_url, set(rooms))
        )

    wait_for(recovered, timeout=90)
    moved = next(p for p in report(w.metrics_url)["processes"] if p["process"] != victim["process"])
    assert set(victim["rooms"]) <= set(moved["rooms"])
    now = {p["pid"] for p in report(w.metrics_url)["processes"]}
    assert w.stop() == 0
    # the worker's processes end with it
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in now), timeout=10)


@pytest.mark.parametrize("fault", ["secret", "url"])
def test_worker_with_bad_credentials_says_so_within_10s_and_exits_non_zero(
    livekit: LocalServer, fault: str
) -> None:
    import subprocess
    import sys
    import time

    env = lk_env(livekit)
    if fault == "secret":
        env["LIVEKIT_API_SECRET"] = "wrong-secret-wrong-secret-wrong-secret-77"
    else:
        env["LIVEKIT_URL"] = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    t = time.monotonic()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncmon.cli",
            "worker",
            "--metrics-addr",
            f"127.0.0.1:{free_port()}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    took = time.monotonic() - t
    assert p.returncode == 2 and took <= 10.0, (p.returncode, took, p.stderr[-500:])
    want = "unauthorized" if fault == "secret" else "cannot connect"
    assert want in p.stderr, p.stderr[-500:]
    assert "wrong-secret" not in p.stderr and livekit.api_secret not in p.stderr
    assert "Traceback" not in p.stderr


def test_a_workers_processes_end_when_it_is_killed(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    w = start_worker(procs, livekit, "syncmon-orphans", "2")
    wait_for(lambda: sample(scrape(w.metrics_url), "syncmon_worker_processes") == 2, timeout=60)
    children = {p["pid"] for p in report(w.metrics_url)["processes"]}
    assert len(children) == 2
    os.kill(w.proc.pid, signal.SIGKILL)  # no clean-up of its own: its children must notice
    w.proc.wait(timeout=10)

    def gone(pid: int) -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] == "Z"  # exited, not reaped yet
        except FileNotFoundError:
            return True

    wait_for(lambda: all(gone(pid) for pid in children), timeout=15)
