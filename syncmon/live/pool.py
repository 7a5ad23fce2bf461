"""A worker's rooms spread over processes, one per core, behind one ``/metrics``.

One Python process holds one GIL: a worker whose rooms all ran as threads of one process used
about one core whatever the host had. ``syncmon worker --processes N`` keeps the agent
registration (one worker to LiveKit's dispatch, one load figure) in a light parent process and
runs the room monitors in N child processes (fresh interpreters: nothing of the parent's native
SDK state is inherited; started with ``subprocess``, not ``multiprocessing``, whose spawn start
also starts its resource tracker, an interpreter of ~15 MiB that a socket pair does not need).
The parent gives each new room to the child with the fewest rooms.

Parent and children talk HTTP on loopback, which each child serves anyway: ``POST
/rooms/{room}`` starts monitoring a room and answers when that monitor has ended (the job's
lifetime is that request's), ``DELETE /rooms/{room}`` stops it. The parent's ``/metrics`` reads
every child's ``/metrics`` and serves them as one exposition, as a single-process worker would
(rooms are disjoint between children; a series without a room label, such as the collect
errors, is summed). A child that does not answer a scrape is not hidden: its
``syncmon_worker_process_up{process}`` is 0 and the scrape counts a collect error. A child that
dies is started again with backoff (``syncmon_task_restarts_total{task="worker_process"}``) and
its rooms are handed to the children that are up. A child whose parent has gone stops its rooms
and exits. Every LOAD_POLL_S the parent asks each child (``GET /load``) whether its monitors
fall behind their pictures; while one does, the worker reports itself full and refuses rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from .. import metric_names as n
from ..metrics import overloaded_family
from .config import LiveKitCredentials
from .room import WatchOptions
from .state import MonitorState

log = logging.getLogger(__name__)

CHILD_ENTRY = "from syncmon.live.pool import child_entry; child_entry"
CHILD_START_TIMEOUT_S = 60.0  # a new child imports the SDK and numpy first
SCRAPE_TIMEOUT_S = 5.0
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
RESTART_TASK = "worker_process"
# what the parent says for the whole worker: the children's own figures would add up wrong
PARENT_FAMILIES = {n.ROOMS, n.ROOMS_MAX, n.ROOMS_REJECTED.removesuffix("_total"), n.OVERLOADED}
# how often the parent asks its children whether their monitors fall behind (its load to
# dispatch); a child that does not answer within LOAD_TIMEOUT_S is taken as overloaded (its
# loop is starved) unless it is not up at all
LOAD_POLL_S = 2.0
LOAD_TIMEOUT_S = 2.0


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, capped by the cgroup's CPU quota (a
    Kubernetes CPU limit is a quota, not an affinity: a pod limited to 2 CPUs on a 32-core node
    sees 32 cores in its affinity)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 1e-9)))
    return cores


def _cgroup_quota(root: Path) -> float | None:
    """CPUs the cgroup's quota allows (cgroup v2 ``cpu.max``, or v1's CFS quota and period);
    None when there is no quota or it cannot be read."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu"
        q = int((v1 / "cpu.cfs_quota_us").read_text())
        per = int((v1 / "cpu.cfs_period_us").read_text())
        return None if q <= 0 or per <= 0 else q / per
    except (OSError, ValueError):
        return None


# -- the child process ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChildConfig:
    index: int
    creds: LiveKitCredentials
    options: WatchOptions
    max_rooms: int
    verbose: bool = False


def child_entry(fd: int) -> None:
    """A child's entry (``python -c``, started by ``ProcessPool``): ``fd`` is its end of the
    parent's socket pair, on which the parent sends its ``ChildConfig`` first."""
    conn = Connection(fd)
    cfg = conn.recv()
    if not isinstance(cfg, ChildConfig):
        raise SystemExit(f"worker process: expected its configuration, got {type(cfg).__name__}")
    child_main(cfg, conn)


def child_main(cfg: ChildConfig, conn: Connection) -> None:
    """Monitor the rooms the parent hands over until the parent says stop or goes away."""
    from ..heap import start_heap_trimmer
    from ..logs import add_secret, setup_logging
    from ..threads import limit_numeric_threads

    limit_numeric_threads()
    setup_logging(cfg.verbose)
    start_heap_trimmer()
    add_secret(cfg.creds.api_secret)
    code = 1
    try:
        code = asyncio.run(_child(cfg, conn))
    finally:
        # the SDK's native runtime can abort while Python finalizes (see cli._NATIVE_COMMANDS)
        logging.shutdown()
        os._exit(code)


async def _child(cfg: ChildConfig, conn: Connection) -> int:
    from .http import build_app, serve
    from .room import RoomMonitor

    state = MonitorState(max_rooms=cfg.max_rooms)
    from ..metrics import make_registry

    app = build_app(state, make_registry(state), needs_rooms=False)
    monitors: dict[str, RoomMonitor] = {}
    stop = asyncio.Event()

    async def watch(req: web.Request) -> web.Response:
        room = req.match_info["room"]
        if room in monitors:
            return web.json_response({"room": room, "error": "already monitored"}, status=409)
        mon = RoomMonitor(creds=cfg.creds, room_name=room, state=state, options=cfg.options)
        monitors[room] = mon
        try:
            await mon.run()
        except Exception as e:  # ConnectError, or a failure of the SDK: the parent retries
            log.error("monitor of a room failed: %s: %s", type(e).__name__, e)
            return web.json_response({"room": room, "error": str(e)}, status=502)
        finally:
            monitors.pop(room, None)
        return web.json_response({"room": room, "ended": True})

    async def unwatch(req: web.Request) -> web.Response:
        mon = monitors.get(req.match_info["room"])
        if mon is not None:
            mon.stop()
        return web.json_response({"stopping": mon is not None})

    async def load(_req: web.Request) -> web.Response:
        return web.json_response({"overloaded": state.overloaded(), "rooms": len(state.rooms)})

    app.router.add_get("/load", load)
    app.router.add_post("/rooms/{room}", watch)
    app.router.add_delete("/rooms/{room}", unwatch)
    runner = await serve(app, "127.0.0.1", 0)
    port = int(runner.addresses[0][1])
    loop = asyncio.get_running_loop()

    def listen() -> None:
        # the parent sends "stop", or its end of the pipe closes when it dies
        with contextlib.suppress(EOFError, OSError):
            while conn.recv() != "stop":
                pass
        loop.call_soon_threadsafe(stop.set)

    conn.send(port)
    threading.Thread(target=listen, name="syncmon-parent", daemon=True).start()
    await stop.wait()
    for mon in list(monitors.values()):
        mon.stop()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_until(lambda: not monitors), timeout=5.0)
    await runner.cleanup()
    return 0


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


async def _until(cond: Any, every_s: float = 0.05) -> None:
    while not cond():
        await asyncio.sleep(every_s)


# -- the parent's view of its children -----------------------------------------------------


@dataclass
class Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    conn: Connection | None = None
    port: int | None = None
    rooms: set[str] = field(default_factory=set)
    restarts: int = 0
    up_since: float = 0.0

    @property
    def up(self) -> bool:
        return self.port is not None and self.process is not None and self.process.poll() is None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class ProcessPool:
    """N child processes monitoring rooms; rooms go to the child with the fewest."""

    def __init__(
        self,
        processes: int,
        *,
        creds: LiveKitCredentials,
        options: WatchOptions,
        max_rooms: int,
        verbose: bool = False,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.children = [Child(i) for i in range(processes)]
        self._creds, self._options, self._max_rooms = creds, options, max_rooms
        self._verbose = verbose
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._load_follower: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._stops: dict[str, asyncio.Event] = {}
        self.collect_errors = 0

    async def start(self, state: MonitorState | None = None) -> None:
        """Start the children; with ``state`` (the parent's), follow their load into it."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        await asyncio.gather(*(self._spawn(c) for c in self.children))
        self._supervisor = asyncio.create_task(self._supervise(), name="syncmon-pool")
        if state is not None:
            self._load_follower = asyncio.create_task(
                self._follow_load(state), name="syncmon-pool-load"
            )

    async def _follow_load(self, state: MonitorState) -> None:
        """``state.overloaded_elsewhere``: whether a child's monitors fall behind, as the
        children last said (see LOAD_POLL_S)."""
        was = False
        while not self._stopping:
            over = False
            try:
                for c, status, text in await self._get_all("/load", LOAD_TIMEOUT_S):
                    if not c.up:
                        continue
                    try:
                        over = over or status != 200 or bool(json.loads(text or "")["overloaded"])
                    except (ValueError, KeyError, TypeError):
                        over = True
            except Exception as e:  # the next round asks again
                log.error("asking the worker processes for their load failed: %r", e)
            state.overloaded_elsewhere = over
            if over != was:
                log.log(
                    logging.WARNING if over else logging.INFO,
                    "worker processes %s: the worker reports itself %s",
                    "fall behind their pictures" if over else "caught up",
                    "full" if over else "by its rooms again",
                )
                was = over
            await asyncio.sleep(LOAD_POLL_S)

    async def _spawn(self, c: Child) -> None:
        if c.conn is not None:  # (a child that died: its socket goes with it)
            c.conn.close()
            c.conn = None
        ours_s, theirs_s = socket.socketpair()
        ours, theirs = Connection(ours_s.detach()), theirs_s.detach()
        cfg = ChildConfig(c.index, self._creds, self._options, self._max_rooms, self._verbose)
        try:
            proc = subprocess.Popen(
                # -P: nothing from the working directory shadows syncmon's modules
                [sys.executable, "-P", "-c", f"{CHILD_ENTRY}({theirs})"],
                pass_fds=(theirs,),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            os.close(theirs)
        c.process, c.conn, c.port = proc, ours, None
        ours.send(cfg)
        ready = await asyncio.to_thread(ours.poll, CHILD_START_TIMEOUT_S)
        if not ready or proc.poll() is not None:
            proc.kill()  # the supervisor starts it again
            raise RuntimeError(f"worker process {c.index} did not start (exit {proc.poll()})")
        c.port = int(ours.recv())
        c.up_since = time.monotonic()
        log.info("worker process %d (pid %d) serves on port %d", c.index, proc.pid, c.port)
        self._changed.set()

    async def _supervise(self) -> None:
        """Start a child that died again, with backoff; its rooms' jobs retry elsewhere."""
        while not self._stopping:
            await asyncio.sleep(0.5)
            for c in self.children:
                if self._stopping or c.process is None or c.process.poll() is None:
                    continue
                log.error(
                    "worker process %d (pid %s) died with exit code %s; starting it again",
                    c.index,
                    c.process.pid,
                    c.process.returncode,
                )
                c.port = None
                c.restarts += 1
                wait = RESTART_BACKOFF_S[min(c.restarts, len(RESTART_BACKOFF_S)) - 1]
                # a child that lived long was not crash-looping: its backoff starts over
                if time.monotonic() - c.up_since > 10 * RESTART_BACKOFF_S[-1]:
                    wait = RESTART_BACKOFF_S[0]
                await asyncio.sleep(wait)
                try:
                    await self._spawn(c)
                except Exception as e:  # tried again on the next round, with more backoff
                    log.error("starting worker process %d again failed: %s", c.index, e)

    def _pick(self) -> Child | None:
        up = [c for c in self.children if c.up]
        return min(up, key=lambda c: (len(c.rooms), c.index)) if up else None

    async def watch(self, room: str) -> None:
        """Monitor ``room`` in a child until the monitor ends or ``unwatch(room)``; a child
        that dies meanwhile hands the room to another."""
        assert self._session is not None
        stop = self._stops.setdefault(room, asyncio.Event())
        try:
            await self._watch(room, stop)
        finally:
            if self._stops.get(room) is stop:
                del self._stops[room]

    async def _watch(self, room: str, stop: asyncio.Event) -> None:
        while not (stop.is_set() or self._stopping):
            c = self._pick()
            if c is None:
                self._changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=1.0)
                continue
            c.rooms.add(room)
            try:
                if await self._watch_in(c, room, stop):
                    return
            finally:
                c.rooms.discard(room)
            await asyncio.sleep(1.0)

    async def _watch_in(self, c: Child, room: str, stop: asyncio.Event) -> bool:
        """True when the room's monitor in ``c`` ended (or was stopped); False when ``c``
        could not monitor it or died."""
        assert self._session is not None
        session = self._session

        async def post() -> tuple[int, Any]:
            async with session.post(c.url(f"/rooms/{room}")) as resp:
                return resp.status, await resp.json()

        req = asyncio.ensure_future(post())
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({req, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not req.done():  # stopped: the child ends the monitor, the request returns
                await self._delete(c, room)
                await asyncio.wait({req}, timeout=10.0)
                return True
            status, body = req.result()
            if status == 200:
                return True  # the room ended
            log.warning("worker process %d could not monitor a room: %s", c.index, body)
        except (aiohttp.ClientError, json.JSONDecodeError, ConnectionError) as e:
            if not (stop.is_set() or self._stopping):
                log.warning("worker process %d lost a room (%s); handing it on", c.index, e)
        finally:
            stop_wait.cancel()
            if not req.done():
                req.cancel()
        return False

    async def _delete(self, c: Child, room: str) -> None:
        assert self._session is not None
        if not c.up:
            return
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with self._session.delete(
                c.url(f"/rooms/{room}"), timeout=aiohttp.ClientTimeout(total=5)
            ):
                pass

    def stop_watching(self) -> None:
        """Every room's job ends (the worker stops)."""
        for stop in self._stops.values():
            stop.set()

    async def unwatch(self, room: str) -> None:
        """Stop monitoring ``room`` (its job is shutting down)."""
        if (stop := self._stops.get(room)) is not None:
            stop.set()

    async def _get_all(
        self, path: str, timeout_s: float = SCRAPE_TIMEOUT_S
    ) -> list[tuple[Child, int, str] | tuple[Child, None, None]]:
        assert self._session is not None
        session = self._session

        async def one(c: Child) -> tuple[Child, int, str] | tuple[Child, None, None]:
            if not c.up:
                return c, None, None
            try:
                async with session.get(
                    c.url(path), timeout=aiohttp.ClientTimeout(total=timeout_s)
                ) as resp:
                    return c, resp.status, await resp.text()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return c, None, None

        return list(await asyncio.gather(*(one(c) for c in self.children)))

    async def metrics(self, state: MonitorState) -> bytes:
        """Every child's exposition as one, with the worker's own figures."""
        texts: list[str] = []
        up = GaugeMetricFamily(
            n.WORKER_PROCESS_UP, "1 while the worker process answers", labels=["process"]
        )
        for c, status, text in await self._get_all("/metrics"):
            ok = status == 200 and text is not None
            up.add_metric([str(c.index)], 1.0 if ok else 0.0)
            if ok and text is not None:
                texts.append(text)
            elif not self._stopping:
                self.collect_errors += 1  # that child's rooms are missing from this scrape
        own = _parent_families(state, self.children, up, self.collect_errors)
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Static(merge_expositions(texts, own)))
        return generate_latest(reg)

    async def report(self) -> dict[str, Any]:
        rooms: dict[str, Any] = {}
        procs = []
        for c, status, text in await self._get_all("/report"):
            if status == 200 and text:
                rooms.update(json.loads(text).get("rooms", {}))
            procs.append(
                {
                    "process": c.index,
                    "pid": None if c.process is None else c.process.pid,
                    "up": status == 200,
                    "rooms": sorted(c.rooms),
                    "restarts": c.restarts,
                }
            )
        return {"rooms": rooms, "processes": procs}

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {}
        ready = True
        for c, status, text in await self._get_all("/readyz"):
            ok = status == 200
            ready = ready and ok
            rooms = json.loads(text).get("rooms", {}) if text else {}
            detail[str(c.index)] = {"ready": ok, "rooms": rooms}
        return ready, detail

    async def aclose(self) -> None:
        self._stopping = True
        for task in (self._supervisor, self._load_follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for c in self.children:
            if c.conn is not None:
                with contextlib.suppress(OSError, BrokenPipeError):
                    c.conn.send("stop")
        deadline = time.monotonic() + 8.0
        for c in self.children:
            if c.process is None:
                continue
            await asyncio.to_thread(_wait, c.process, max(0.1, deadline - time.monotonic()))
            if c.process.poll() is None:
                log.warning("worker process %d did not stop; killing it", c.index)
                c.process.kill()
                await asyncio.to_thread(_wait, c.process, 2.0)
            if c.conn is not None:
                c.conn.close()
        if self._session is not None:
            await self._session.close()


# -- one exposition from many --------------------------------------------------------------


class _Static:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def _parent_families(
    state: MonitorState, children: list[Child], up: GaugeMetricFamily, collect_errors: int
) -> list[Metric]:
    rooms = GaugeMetricFamily(n.ROOMS, "Rooms this worker monitors now")
    rooms.add_metric([], len(state.rooms))
    cap = GaugeMetricFamily(n.ROOMS_MAX, "Rooms this worker takes at most (--max-rooms)")
    cap.add_metric([], state.max_rooms)
    rejected = CounterMetricFamily(
        n.ROOMS_REJECTED.removesuffix("_total"),
        "Rooms not monitored because the cap was reached or the worker was overloaded",
    )
    rejected.add_metric([], state.rooms_rejected)
    restarts = CounterMetricFamily(
        n.TASK_RESTARTS.removesuffix("_total"),
        "Monitor tasks that died and were restarted",
        labels=[n.LABEL_ROOM, n.LABEL_PARTICIPANT, "task"],
    )
    restarted = sum(c.restarts for c in children)
    if restarted:
        restarts.add_metric(["", "", RESTART_TASK], restarted)
    errors = CounterMetricFamily(
        n.COLLECT_ERRORS.removesuffix("_total"),
        "Avatars left out of a scrape because their state could not be read",
    )
    errors.add_metric([], collect_errors)
    procs = GaugeMetricFamily(n.WORKER_PROCESSES, "Worker processes serving rooms")
    procs.add_metric([], sum(1 for c in children if c.up))
    return [rooms, cap, rejected, restarts, errors, procs, overloaded_family(state), up]


def merge_expositions(texts: Iterable[str], own: Iterable[Metric]) -> list[Metric]:
    """Families of several expositions (and ``own``) as one list: the samples of a family are
    put together; a sample that more than one exposition has is summed when it names no room
    (a process-wide counter) and kept once when it does (a room is one child's); the children's
    own worker-wide figures (``PARENT_FAMILIES``) give way to ``own``'s."""
    out: dict[str, Metric] = {}
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}

    def add(fam: Metric) -> None:
        base = out.get(fam.name)
        if base is None:
            base = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            out[fam.name] = base
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            at = seen.get(key)
            if at is None:
                seen[key] = len(base.samples)
                base.samples.append(s)
            elif n.LABEL_ROOM not in s.labels or not s.labels[n.LABEL_ROOM]:
                old = base.samples[at]
                base.samples[at] = old._replace(value=old.value + s.value)

    for fam in own:
        add(fam)
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in PARENT_FAMILIES:
                add(fam)
    return list(out.values())


async def serve_pool_http(
    pool: ProcessPool, state: MonitorState, host: str, port: int
) -> web.AppRunner:
    """The worker's one /metrics, /healthz, /readyz and /report over all its processes."""
    import sys

    from .http import serve

    async def metrics(_req: web.Request) -> web.Response:
        body = await pool.metrics(state)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_req: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_req: web.Request) -> web.Response:
        ready, detail = await pool.ready()
        return web.json_response(
            {"ready": ready, "processes": detail}, status=200 if ready else 503
        )

    async def report(_req: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(await pool.report(), indent=2), content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/report", report)
    runner = await serve(app, host, port)
    print(
        f"syncmon worker: metrics on http://{host}:{port}/metrics ({len(pool.children)} processes)",
        file=sys.stderr,
    )
    return runner
