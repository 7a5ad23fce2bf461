"""Fixtures for tests through the real livekit-server on loopback (no fake SFU).

The server is the binary scripts/setup.sh builds; a missing binary fails the tests (CI installs
it), it is never skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncmon.reference.localserver import LocalServer, free_port


@pytest.fixture(scope="session")
def livekit() -> Iterator[LocalServer]:
    srv = LocalServer.start(build=False)
    try:
        yield srv
    finally:
        srv.stop()


def lk_env(srv: LocalServer) -> dict[str, str]:
    return {
        **os.environ,
        "LIVEKIT_URL": srv.url,
        "LIVEKIT_API_KEY": srv.api_key,
        "LIVEKIT_API_SECRET": srv.api_secret,
    }


@dataclass
class Proc:
    proc: subprocess.Popen[str]
    metrics_url: str = ""
    # its stderr (a file, not a pipe: a pipe nobody reads blocks a process that logs 64 KiB)
    log_path: Path | None = None

    def log(self) -> str:
        return "" if self.log_path is None else self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


LOG_TAIL_LINES = 30


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Starts syncmon processes; stops them after the test and prints the end of each one's log
    (pytest shows it with a failing test's report)."""
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str], metrics_port: int | None = None) -> Proc:
        path = tmp_path / f"proc{len(started)}-{args[0]}.log"
        with path.open("w") as err:
            p = subprocess.Popen(
                [sys.executable, "-m", "syncmon.cli", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
        pr = Proc(p, f"http://127.0.0.1:{metrics_port}" if metrics_port else "", path)
        started.append(pr)
        return pr

    yield start
    for p in started:
        p.stop(timeout=5)
        tail = p.log().splitlines()[-LOG_TAIL_LINES:]
        print(f"--- {' '.join(map(str, p.proc.args[3:5]))} (exit {p.proc.returncode}) ---")
        print("\n".join(tail))


def start_monitor(
    procs: Callable[..., Proc], srv: LocalServer, *rooms: str, extra: tuple[str, ...] = ()
) -> Proc:
    port = free_port()
    args = ["watch", "--metrics-addr", f"127.0.0.1:{port}"]
    for r in rooms:
        args += ["--room", r]
    return procs(*args, *extra, env=lk_env(srv), metrics_port=port)


def start_publisher(
    procs: Callable[..., Proc], srv: LocalServer, room: str, *args: str, identity: str = "avatar"
) -> Proc:
    return procs(
        "reference", "publish", "--room", room, "--identity", identity, *args, env=lk_env(srv)
    )


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """All samples of /metrics keyed by (name, sorted labels)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    want = set(labels.items())
    for (n, lv), v in samples.items():
        if n == name and want <= set(lv):
            return v
    return None


class ProcessDied(Exception):
    """A process a condition waits on has exited: waiting longer is no use."""


def wait_for(pred: Callable[[], object], timeout: float, every: float = 0.5) -> object:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except ProcessDied:
            raise
        except Exception as e:  # not up yet
            last_exc = e
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s (last error: {last_exc})")


def avatar_report(url: str, room: str, identity: str) -> dict[str, Any] | None:
    """One avatar's entry of the monitor's /report (None while it has none)."""
    with urllib.request.urlopen(url + "/report", timeout=5) as r:
        rep = json.load(r)
    entry = rep.get("rooms", {}).get(room, {}).get("avatars", {}).get(identity)
    return cast("dict[str, Any] | None", entry)


def viewer_truth_ms(url: str, room: str, identity: str, sent_ms: float) -> float:
    """The offset a viewer plays for a sender offset of ``sent_ms``: the same when viewers
    lip-sync the tracks (sync_streams), else plus this receiver's own A/V jitter-buffer
    difference (a viewer then plays each as it arrives)."""
    a = avatar_report(url, room, identity)
    assert a is not None and a["viewer_sync"] is not None, a
    if a["viewer_sync"]:
        return sent_ms
    return sent_ms + float(a["receiver_bias_ms"])


def participants(srv: LocalServer, room: str, *, hidden: bool = True) -> list[str]:
    """The identities in ``room`` (``hidden=False``: only those frontends see); [] while the
    room does not exist."""
    import asyncio

    from livekit import api

    async def go() -> list[str]:
        async with api.LiveKitAPI(
            srv.url.replace("ws://", "http://"), srv.api_key, srv.api_secret
        ) as lk:
            res = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            return [p.identity for p in res.participants if hidden or not p.permission.hidden]

    try:
        return asyncio.run(go())
    except api.TwirpError:
        return []


def dispatch(srv: LocalServer, rooms: list[str], agent_name: str) -> None:
    from livekit import api

    async def go() -> None:
        async with api.LiveKitAPI(
            srv.url.replace("ws://", "http://"), srv.api_key, srv.api_secret
        ) as lk:
            for r in rooms:
                await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=agent_name, room=r)
                )
                await asyncio.sleep(0.5)  # four requests within 2 s: they overlap

    asyncio.run(go())


def visible(srv: LocalServer, room: str) -> list[str]:
    """The participants of ``room`` that frontends see (hidden ones are not shown)."""
    return participants(srv, room, hidden=False)


def start_worker(
    procs: Callable[..., Proc],
    srv: LocalServer,
    agent_name: str,
    processes: str,
    env: dict[str, str] | None = None,
) -> Proc:
    port = free_port()
    return procs(
        "worker",
        "--agent-name",
        agent_name,
        "--metrics-addr",
        f"127.0.0.1:{port}",
        "--processes",
        processes,
        env=env or lk_env(srv),
        metrics_port=port,
    )


def rooms_of(url: str) -> set[str]:
    s = scrape(url)
    return {
        dict(lv)["room"] for (n, lv), v in s.items() if n == "syncmon_room_connected" and v == 1
    }
