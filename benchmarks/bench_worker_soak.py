"""Worker soak: ``syncmon worker`` serving rooms that come and go, real livekit-server.

``--rooms`` rooms at a time, each with one reference avatar, sent to the worker by agent
dispatch as an application does; each room lives ``--room-min`` minutes (staggered), then its
avatar leaves and the room is deleted, and a new room is dispatched in its place. Every 5
minutes (``--report-min``) it prints the worker's RSS (all its processes, and each), open fds
and threads, the rooms served so far, and the scrapes (every second) that failed or missed a
live room's avatar series. At the end: RSS growth after the warm-up, per room served.

    python benchmarks/bench_worker_soak.py                       # 60 minutes, 4 rooms, 2 processes
    python benchmarks/bench_worker_soak.py --minutes 20 --room-min 2

Goal (issue 13): a worker's memory flat over an hour of rooms coming and going.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_monitor import dispatch, frames, server_env, spawn, stop_on_signals  # noqa: E402
from bench_soak import scrape  # noqa: E402

from syncmon.reference.localserver import LocalServer, free_port  # noqa: E402

AGENT = "syncmon-soak"
JOINING_S = 30.0  # dispatch, connect, subscribe, first keyframe


def delete_room(srv: LocalServer, room: str) -> None:
    from livekit import api

    async def go() -> None:
        http = srv.url.replace("ws://", "http://")
        async with api.LiveKitAPI(http, srv.api_key, srv.api_secret) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))

    asyncio.run(go())


class Scraper(threading.Thread):
    """Scrapes every second: failures, and live rooms whose avatar has no series."""

    def __init__(self, url: str, live: dict[str, float]) -> None:
        super().__init__(daemon=True)
        self.url, self.live = url, live  # room -> when its avatar started publishing
        self.scrapes = self.failed = self.missing = 0
        self.stop = threading.Event()
        self.last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.scrapes += 1
            try:
                s = scrape(self.url)
            except Exception:
                self.failed += bool(self.last)
                continue
            self.last = s
            now = time.monotonic()
            for room, since in list(self.live.items()):
                lab = (("participant", "av"), ("room", room))
                if now - since >= JOINING_S and ("syncmon_video_frames_total", lab) not in s:
                    self.missing += 1


def tree_of(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rooms", type=int, default=4, help="rooms at a time")
    ap.add_argument("--room-min", type=float, default=6.0, help="each room's life")
    ap.add_argument("--processes", type=int, default=2, help="the worker's --processes")
    ap.add_argument("--report-min", type=float, default=5.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--worker-arg", action="append", default=[], help="one more worker argument")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    stop_on_signals()
    with LocalServer.start() as srv:
        env = server_env(srv)
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        worker = spawn(
            ["worker", "--metrics-addr", f"127.0.0.1:{port}", "--agent-name", AGENT]
            + ["--processes", str(args.processes), *args.worker_arg],
            env,
        )
        pubs: dict[str, subprocess.Popen[bytes]] = {}
        live: dict[str, float] = {}
        ends: dict[str, float] = {}
        served = 0
        sc = Scraper(url, live)
        try:
            deadline = time.monotonic() + 120
            while True:  # a dispatch before the worker registered is never offered to it
                try:
                    frames(url)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the worker never served /metrics") from None
                    time.sleep(0.5)
            time.sleep(5)

            def open_room(life_s: float) -> None:
                nonlocal served
                served += 1
                room = f"soak-{served}"
                dispatch(srv, [room], AGENT)
                pubs[room] = spawn(
                    ["reference", "publish", "--room", room, "--identity", "av"]
                    + ["--width", str(width), "--height", str(height)],
                    env,
                )
                now = time.monotonic()
                live[room], ends[room] = now, now + life_s

            def close_room(room: str) -> None:
                live.pop(room, None)
                ends.pop(room, None)
                pr = pubs.pop(room)
                pr.terminate()
                pr.wait(timeout=10)
                delete_room(srv, room)

            life = args.room_min * 60
            for i in range(args.rooms):  # staggered: one room ends every life / rooms
                open_room(life * (i + 1) / args.rooms)
            sc.start()
            t0 = time.monotonic()
            next_report = t0
            warm: float | None = None
            warm_served = 0
            rss = 0.0
            while (now := time.monotonic()) - t0 < args.minutes * 60:
                for room in [r for r, e in ends.items() if e <= now]:
                    close_room(room)
                    open_room(life)
                if now >= next_report:
                    tree = tree_of(worker.pid)
                    each = [x.memory_info().rss / 2**20 for x in tree]
                    rss = sum(each)
                    el = (now - t0) / 60
                    if warm is None and el >= 5:
                        warm, warm_served = rss, served
                    s = sc.last
                    print(
                        f"{el:5.1f} min: worker RSS {rss:6.1f} MiB ("
                        + " + ".join(f"{v:.0f}" for v in each)
                        + f"), fds {sum(x.num_fds() for x in tree)}, threads "
                        f"{sum(x.num_threads() for x in tree)}, rooms now "
                        f"{s.get(('syncmon_rooms', ()), '-')}, served {served}, scrapes "
                        f"{sc.scrapes} (failed {sc.failed}, missing a live room's avatar "
                        f"{sc.missing})",
                        flush=True,
                    )
                    next_report += args.report_min * 60
                time.sleep(0.5)
            if warm is not None:
                print(
                    f"RSS after warm-up {warm:.1f} MiB -> {rss:.1f} MiB ({rss - warm:+.1f} MiB "
                    f"over {served - warm_served} rooms served; "
                    f"{(rss - warm) / max(1, served - warm_served):+.2f} MiB a room), "
                    f"scrapes {sc.scrapes}, failed {sc.failed}, missing {sc.missing}",
                    flush=True,
                )
        finally:
            sc.stop.set()
            for x in [*pubs.values(), worker]:
                x.terminate()
            for x in [*pubs.values(), worker]:
                try:
                    x.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    x.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
