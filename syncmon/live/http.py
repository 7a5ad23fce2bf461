"""The monitor's HTTP endpoints: /metrics, /healthz, /readyz, /report.

/metrics always answers (a lost room shows as ``syncmon_room_connected 0``, never a 500).
/readyz is 200 while the monitor serves and reaches the server: every room it watches is
connected (a worker with no room is ready). Whether an avatar is on is not readiness: a sidecar's
/readyz gates its whole pod, and an idle room is normal; that state is in /metrics and /report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..metrics import make_registry
from .state import MonitorState

log = logging.getLogger(__name__)


def build_app(
    state: MonitorState, registry: CollectorRegistry, *, needs_rooms: bool = True
) -> web.Application:
    async def metrics(_req: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_req: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_req: web.Request) -> web.Response:
        rooms = dict(state.rooms)
        ready = (bool(rooms) or not needs_rooms) and all(r.connected for r in rooms.values())
        detail = {
            name: {
                "connected": r.connected,
                "avatars": len(r.avatars),
                "tracks_up": sum(sum(a.track_up.values()) for a in list(r.avatars.values())),
            }
            for name, r in rooms.items()
        }
        return web.json_response({"ready": ready, "rooms": detail}, status=200 if ready else 503)

    async def report(_req: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(state.report(), indent=2), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/report", report)
    return app


async def start_monitor_http(
    state: MonitorState, host: str, port: int, *, what: str = "syncmon", needs_rooms: bool = True
) -> web.AppRunner:
    """Serve ``state`` on host:port (its own registry) and say where on stderr.

    ``needs_rooms``: not ready before a room is watched (``watch``); a worker is ready idle.
    """
    app = build_app(state, make_registry(state), needs_rooms=needs_rooms)
    runner = await serve(app, host, port)
    print(f"{what}: metrics on http://{host}:{port}/metrics", file=sys.stderr)
    return runner


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a clean exit within the 2 s budget)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving; the caller keeps the runner and calls ``cleanup()`` to stop."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
