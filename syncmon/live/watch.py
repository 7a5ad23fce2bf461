"""``syncmon watch``: monitor rooms and serve the metrics until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from ..errors import ConnectError
from ..heap import start_heap_trimmer
from .config import LiveKitCredentials
from .http import start_monitor_http, stop_on_signals
from .room import RoomMonitor, WatchOptions
from .state import MonitorState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchConfig:
    creds: LiveKitCredentials
    rooms: tuple[str, ...]
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    options: WatchOptions = WatchOptions()
    wait_for_room: bool = False
    max_rooms: int = 100
    print_table: bool = False


async def wait_for_room(creds: LiveKitCredentials, room: str, stop: asyncio.Event) -> None:
    """Poll the RoomService until ``room`` exists (so that syncmon never creates it)."""
    from livekit import api

    if not (creds.api_key and creds.api_secret):
        raise ConnectError("--wait-for-room needs --api-key and --api-secret (not --token)")
    http_url = creds.url.replace("ws://", "http://").replace("wss://", "https://")
    async with api.LiveKitAPI(http_url, creds.api_key, creds.api_secret) as lk:
        logged = False
        while not stop.is_set():
            try:
                res = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
                if res.rooms:
                    return
            except Exception as e:  # the server may not be up yet either
                log.debug("list_rooms failed: %s", e)
            if not logged:
                log.info("waiting for room %s to exist", room)
                logged = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)


def format_table(state: MonitorState) -> str:
    """One line per avatar: what the demo prints every second."""
    head = (
        f"{'room':<14}{'avatar':<18}{'content':>9}{'conf':>6}{'tstamp':>9}{'playout':>9}{'fps':>6}"
        f"{'jitter':>8}{'drops':>6}{'dups':>5}{'frz':>4}{'frz s':>7}{'drift':>8}  verdict"
    )
    lines = [head]
    for a in state.avatars():
        r = a.analyzer.report()
        off, v = r["offset_ms"], r["video"]

        def ms(x: object) -> str:
            return "   -" if x is None else f"{x:+.0f}ms"

        lines.append(
            f"{a.room[:13]:<14}{a.participant[:17]:<18}{ms(off['content']):>9}"
            f"{r['confidence']['content']:>6.2f}{ms(off['timestamp']):>9}{ms(off['playout']):>9}"
            f"{(v['fps'] or 0):>6.1f}{v['jitter_ms']:>6.1f}ms{v['dropped']:>6}{v['duplicated']:>5}"
            f"{v['freezes']:>4}{v['freeze_seconds']:>7.2f}"
            f"{'-' if r['drift_ms_per_min'] is None else format(r['drift_ms_per_min'], '+.1f'):>8}"
            f"  {r['verdict']}"
        )
    for name, rs in state.rooms.items():
        if not rs.connected:
            lines.append(f"{name}: not connected (reconnects {rs.reconnects})")
    return "\n".join(lines)


async def run_watch(
    cfg: WatchConfig,
    *,
    stop: asyncio.Event | None = None,
    out: TextIO = sys.stdout,
    on_ready: Callable[[MonitorState], None] | None = None,
) -> int:
    """Run until ``stop`` is set or a signal arrives; returns the exit code."""
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    start_heap_trimmer()
    state = MonitorState(max_rooms=cfg.max_rooms)
    runner = await start_monitor_http(state, cfg.metrics_host, cfg.metrics_port, what="syncmon")
    monitors: list[RoomMonitor] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for room in cfg.rooms:
            if cfg.wait_for_room:
                await wait_for_room(cfg.creds, room, stop)
                if stop.is_set():
                    return 0
            m = RoomMonitor(creds=cfg.creds, room_name=room, state=state, options=cfg.options)
            monitors.append(m)
            tasks.append(asyncio.create_task(m.run()))
        # the first connection of every room must succeed (a wrong URL or key ends here)
        for m, t in zip(monitors, tasks, strict=True):
            got = asyncio.ensure_future(m.connected_once.wait())
            await asyncio.wait({got, t}, return_when=asyncio.FIRST_COMPLETED)
            got.cancel()
            if t.done() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        if on_ready is not None:
            on_ready(state)
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            if cfg.print_table:
                print(format_table(state) + "\n", file=out, flush=True)
            failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception()]
            if failed:
                # a room monitor restarts itself on every error it can recover from: one that
                # ended with an error cannot, and a supervisor should restart the process
                e = failed[0].exception()
                log.error("a room monitor ended with an error: %s: %s", type(e).__name__, e)
                return 1
            if tasks and all(t.done() for t in tasks):
                break  # every room ended
        return 0
    finally:
        for m in monitors:
            m.stop()
        for t in tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(t, timeout=1.5)
        await runner.cleanup()
