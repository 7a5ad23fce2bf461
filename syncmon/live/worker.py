"""``syncmon worker``: one monitor job per room, spread by LiveKit's own agent dispatch.

Each worker registers with the LiveKit server under ``agent_name`` (explicit dispatch: a room
gets a monitor when the application dispatches ``agent_name`` to it, through the token's room
config or the AgentDispatch API). With one process (``--processes 1``) jobs run as threads of
the worker process; with more, each job hands its room to one of that many child processes
(``pool.py``), so that a worker uses every core. Either way one ``/metrics`` per worker exposes
all its rooms.

The job never calls ``ctx.connect()``: a job's own participant would be visible (kind agent) and
frontends that look for "the agent" of a room could pick it. Instead each job joins with its own
hidden, subscribe-only token exactly as ``syncmon watch`` does, so the room's users see nothing.
When the room ends (or the worker drains) the job shuts itself down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from livekit import agents

from ..errors import ConnectError
from ..heap import start_heap_trimmer
from ..logs import RateLimitedLog
from .config import LiveKitCredentials
from .http import start_monitor_http, stop_on_signals
from .pool import ProcessPool, serve_pool_http
from .room import RoomMonitor, WatchOptions
from .state import MonitorState

log = logging.getLogger(__name__)
REJECT_LOG = RateLimitedLog(log)
DEFAULT_AGENT_NAME = "syncmon"


@dataclass(frozen=True)
class WorkerConfig:
    creds: LiveKitCredentials
    agent_name: str = DEFAULT_AGENT_NAME
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    options: WatchOptions = WatchOptions()
    max_rooms: int = 100
    health_port: int = 0  # the agents framework's own health endpoint; 0 picks a free port
    # 1: rooms run as threads of this process; more: in that many child processes (pool.py)
    processes: int = 1
    verbose: bool = False


PREFLIGHT_TIMEOUT_S = 8.0


async def preflight(creds: LiveKitCredentials) -> None:
    """Ask the server's RoomService once before registering: the agents framework retries a
    rejected key or an unreachable URL forever without saying so, and a worker that never gets
    a job looks healthy. Raises ConnectError naming what is wrong (no secret in it)."""
    from livekit import api

    assert creds.api_key and creds.api_secret
    http_url = creds.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    try:
        async with api.LiveKitAPI(http_url, creds.api_key, creds.api_secret) as lk:
            await asyncio.wait_for(
                lk.room.list_rooms(api.ListRoomsRequest(names=["syncmon-preflight"])),
                timeout=PREFLIGHT_TIMEOUT_S,
            )
    except asyncio.TimeoutError:
        raise ConnectError(f"timed out connecting to {creds.url}") from None
    except api.TwirpError as e:
        if e.status == 401 or "unauthenticated" in str(e.code).lower():
            raise ConnectError(f"unauthorized: {creds.url} rejected the API key/secret") from None
        raise ConnectError(f"cannot use {creds.url}: {e.code} {e.message}") from None
    except Exception as e:  # connection refused, DNS, TLS
        raise ConnectError(f"cannot connect to {creds.url}: {type(e).__name__}") from None


# livekit-agents warms every job process up with its local inference models (a VAD, and the
# end-of-turn model's weights, ~250 MB resident) unless told not to; a monitor uses neither
PRELOAD_ENV = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"


def _agent_server(cfg: WorkerConfig, state: MonitorState) -> agents.AgentServer:
    os.environ.setdefault(PRELOAD_ENV, "0")
    return agents.AgentServer(
        job_executor_type=agents.JobExecutorType.THREAD,
        ws_url=cfg.creds.url,
        api_key=cfg.creds.api_key,
        api_secret=cfg.creds.api_secret,
        port=cfg.health_port,
        num_idle_processes=0,
        # a monitor's load is its share of the room cap, not the host's CPU (which the avatars
        # on the same host may well fill) -- or full while its monitors fall behind their
        # pictures (MonitorState.load); it is reported to the server, which prefers the less
        # loaded worker
        load_fnc=state.load,
        # no threshold: agents 1.8 reserves, for every request being answered, a share of the
        # threshold of threshold / num_idle_processes (all of it with no idle processes), so a
        # second room dispatched while the first job starts was refused by every worker and
        # never offered again. The room cap is enforced in on_request instead, which leaves a
        # refused room to another worker. (agents logs that a production threshold should be
        # below 1: here it is deliberate.)
        load_threshold=math.inf,
    )


async def run_worker(cfg: WorkerConfig, *, stop: asyncio.Event | None = None) -> int:
    if not (cfg.creds.api_key and cfg.creds.api_secret):
        raise ConnectError("syncmon worker needs --api-key and --api-secret (not --token)")
    await preflight(cfg.creds)
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    start_heap_trimmer()  # (and each process of a pool its own)
    state = MonitorState(max_rooms=cfg.max_rooms)
    if cfg.processes > 1:
        return await _run_pool_worker(cfg, state, stop)
    runner = await start_monitor_http(
        state, cfg.metrics_host, cfg.metrics_port, what="syncmon worker", needs_rooms=False
    )

    server = _agent_server(cfg, state)
    monitors: dict[RoomMonitor, asyncio.AbstractEventLoop] = {}
    server.rtc_session(
        _thread_entry(cfg, state, monitors),
        agent_name=cfg.agent_name,
        on_request=_on_request(state),
    )

    def stop_jobs() -> None:
        # every job's monitor on its own loop, so that jobs end at once
        for mon, mon_loop in list(monitors.items()):
            with contextlib.suppress(RuntimeError):
                mon_loop.call_soon_threadsafe(mon.stop)

    try:
        return await _serve_until_stopped(server, stop, stop_jobs)
    finally:
        await runner.cleanup()


def _on_request(state: MonitorState) -> Callable[[agents.JobRequest], Awaitable[None]]:
    async def on_request(req: agents.JobRequest) -> None:
        if len(state.rooms) >= state.max_rooms:
            state.rooms_rejected += 1
            await req.reject(terminate=False)  # another worker may take it
            return
        if state.overloaded():
            # its monitors fall behind their pictures already: one more room would make every
            # room's figures worse (its load says full meanwhile, so dispatch prefers others)
            state.rooms_rejected += 1
            REJECT_LOG.warning(
                "overloaded",
                "refused a room: this worker's monitors are behind their pictures (short of "
                "CPU); %d rooms, %d refused so far",
                len(state.rooms),
                state.rooms_rejected,
            )
            await req.reject(terminate=False)
            return
        await req.accept(name="syncmon")

    return on_request


def _thread_entry(
    cfg: WorkerConfig,
    state: MonitorState,
    monitors: dict[RoomMonitor, asyncio.AbstractEventLoop],
) -> Callable[[agents.JobContext], Awaitable[None]]:
    async def entry(ctx: agents.JobContext) -> None:
        room_name = ctx.job.room.name
        mon = RoomMonitor(creds=cfg.creds, room_name=room_name, state=state, options=cfg.options)

        async def on_shutdown(_reason: str = "") -> None:
            mon.stop()

        ctx.add_shutdown_callback(on_shutdown)
        monitors[mon] = asyncio.get_running_loop()
        try:
            await mon.run()
        except ConnectError as e:
            log.error("monitor job for a room failed: %s", e)
        finally:
            monitors.pop(mon, None)
            ctx.shutdown("syncmon: room monitoring ended")

    return entry


async def _run_pool_worker(cfg: WorkerConfig, state: MonitorState, stop: asyncio.Event) -> int:
    """The rooms in ``cfg.processes`` child processes; this process registers with LiveKit,
    hands each job's room to the child with the fewest and serves the one /metrics."""
    pool = ProcessPool(
        cfg.processes,
        creds=cfg.creds,
        options=cfg.options,
        max_rooms=cfg.max_rooms,
        verbose=cfg.verbose,
    )
    try:
        await pool.start(state)
        runner = await serve_pool_http(pool, state, cfg.metrics_host, cfg.metrics_port)
    except BaseException:
        await pool.aclose()
        raise
    server = _agent_server(cfg, state)
    main_loop = asyncio.get_running_loop()

    def on_main(coro: Coroutine[Any, Any, None]) -> Awaitable[None]:
        # jobs run on threads of their own, each with its loop; the pool and its HTTP client
        # live on this one
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, main_loop))

    async def entry(ctx: agents.JobContext) -> None:
        room = ctx.job.room.name

        async def on_shutdown(_reason: str = "") -> None:
            await on_main(pool.unwatch(room))

        ctx.add_shutdown_callback(on_shutdown)
        # the parent's room count is the worker's load (and its cap)
        state.add_room(room)
        try:
            await on_main(pool.watch(room))
        finally:
            state.remove_room(room)
            ctx.shutdown("syncmon: room monitoring ended")

    server.rtc_session(entry, agent_name=cfg.agent_name, on_request=_on_request(state))
    try:
        return await _serve_until_stopped(server, stop, pool.stop_watching)
    finally:
        await pool.aclose()
        await runner.cleanup()


async def _serve_until_stopped(
    server: agents.AgentServer, stop: asyncio.Event, before_close: Callable[[], None]
) -> int:
    """Run the agents server until ``stop`` (0) or until it ends by itself (1); then
    ``before_close`` (which ends the jobs at once) and the server's own close."""
    task = asyncio.create_task(server.run())
    try:
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if task.done() and task.exception() is not None:
            raise ConnectError(f"agent worker failed: {task.exception()}")
        if task.done() and not stop.is_set():
            # the agents server ended on its own (its connection to LiveKit gave up): exit
            # non-zero so that a supervisor restarts the worker
            log.error("the agent worker stopped by itself (connection to LiveKit lost?)")
            return 1
        return 0
    finally:
        before_close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.aclose(), timeout=5)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
