"""Soak: one ``syncmon watch`` through an hour of what a room does to it, real livekit-server.

Two avatars (reference publishers) in one room; every ``--churn-min`` minutes one of them
leaves and another joins; half-way the server is killed and restarted 5 s later (the avatars
die with it and are started again); for ``--flood-s`` seconds from a quarter of the way an
avatar-kind participant floods ``syncmon.timing`` with garbage, oversized and absurd marks.
Every 5 minutes (``--report-min``) it prints the monitor's RSS, open fds and threads, and all
along it scrapes /metrics every second and counts:

- scrapes that failed or were missing a live avatar's ``syncmon_video_frames_total``;
- ``syncmon_collect_errors_total`` and ``syncmon_task_restarts_total`` as the monitor reports them;
- the alerts that a real alert rule would have raised wrongly: an avatar present and publishing
  video while ``syncmon_track_up{kind="video"}`` said 0 for more than 60 s (a false
  SyncmonNoVideoFrames page).

    python benchmarks/bench_soak.py                 # 60 minutes
    python benchmarks/bench_soak.py --minutes 10    # a shorter run with the same phases
    python benchmarks/bench_soak.py --minutes 20 --churn-min 1 --no-restart --flood-s 0 \
        --memlog /tmp/mem.jsonl --bare              # churn alone, where the memory goes

With ``--memlog FILE`` the monitor runs under ``memlog.py``: each report adds malloc's bytes in
use and free, and the main heap's resident size, and FILE keeps the whole record (RSS growth
that is free memory inside the heap is fragmentation, not a leak). With ``--bare`` a bare SDK
subscriber (``bare_subscriber.py``) receives the same avatars beside the monitor: what grows in
both is the SDK's.

Goals (issue 12): RSS growth <= 5 MiB after warm-up over the hour, flood growth <= 60 MiB and
back after it, zero scrapes missing a live avatar's series, no false page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_monitor import server_env, spawn, stop_on_signals  # noqa: E402

from syncmon.live.token import publisher_token  # noqa: E402
from syncmon.marks import TOPIC  # noqa: E402
from syncmon.reference.localserver import LocalServer, free_port  # noqa: E402

ROOM = "soak"


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def flood(srv: LocalServer, seconds: float) -> int:
    from livekit import rtc

    async def go() -> int:
        r = rtc.Room()
        tok = publisher_token(
            api_key=srv.api_key,
            api_secret=srv.api_secret,
            room=ROOM,
            identity="flooder",
            attributes={"lk.publish_on_behalf": "voice-agent"},
        )
        await r.connect(srv.url, tok)
        src = rtc.AudioSource(48000, 1)  # an avatar with a track: its marks are read
        await r.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("voice", src),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        silence = rtc.AudioFrame(bytes(960), 48000, 1, 480)
        sent = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            good = {"v": 1, "seq": sent, "t_audio_us": sent, "skew_us": 0}
            good |= {"frame_id": 10**12 + sent, "env": [0.1] * 160}
            payload = [
                b"\xff garbage " * 40,
                b"x" * 12_000,
                json.dumps(good).replace(f'"seq": {sent}', '"seq": 1e999').encode(),
                json.dumps(good).encode(),
            ][sent % 4]
            await r.local_participant.publish_data(payload, reliable=True, topic=TOPIC)
            await src.capture_frame(silence)
            sent += 1
            await asyncio.sleep(0.008)
        await r.disconnect()
        return sent

    return asyncio.run(go())


class Scraper(threading.Thread):
    """Scrapes every second; counts what a Prometheus user would call a lie or a gap."""

    def __init__(self, url: str, live: dict[str, float]) -> None:
        super().__init__(daemon=True)
        self.url, self.live = url, live  # identity -> time it started publishing
        self.scrapes = self.failed = self.missing = self.false_down_s = 0
        self.stop = threading.Event()
        self._down_since: dict[str, float] = {}
        self.pages = 0
        self.last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.scrapes += 1
            try:
                s = scrape(self.url)
            except Exception:
                self.failed += bool(self.last)  # not before the monitor first answered
                continue
            self.last = s
            now = time.monotonic()
            for who, since in list(self.live.items()):
                if now - since < 20:  # joining: connect, subscribe, first keyframe
                    continue
                lab = (("participant", who), ("room", ROOM))
                if ("syncmon_video_frames_total", lab) not in s:
                    self.missing += 1
                up = s.get(("syncmon_track_up", (("kind", "video"), *lab)))
                if up == 0:
                    t0 = self._down_since.setdefault(who, now)
                    if now - t0 > 60:
                        self.pages += 1
                        self._down_since[who] = now + 1e9  # one page per episode
                else:
                    self._down_since.pop(who, None)


def memline(path: str | None) -> str:
    """The last record of the monitor's memory log, short."""
    if path is None or not os.path.exists(path):
        return ""
    with open(path) as f:
        lines = f.read().splitlines()
    if not lines:
        return ""
    m = json.loads(lines[-1])
    heap = m["smaps"].get("[heap]", 0.0)
    arenas = m["smaps"].get("anon_arenas", 0.0)
    return (
        f", malloc in use {m['malloc_used']:.1f} free {m['malloc_free']:.1f} MiB, [heap] "
        f"{heap:.1f} MiB, native arenas {arenas:.1f} MiB, objects {m['objects']}, "
        + ", ".join(f"{k} {v}" for k, v in m.get("live", {}).items() if v)
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--churn-min", type=float, default=4.0)
    ap.add_argument("--report-min", type=float, default=5.0)
    ap.add_argument("--flood-s", type=float, default=60.0, help="0: no flood")
    ap.add_argument("--no-restart", action="store_true", help="no server restart half-way")
    ap.add_argument(
        "--watch-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument to the monitor's `syncmon watch` (e.g. --watch-arg=--no-face)",
    )
    ap.add_argument("--memlog", metavar="FILE", help="log the monitor's memory by kind to FILE")
    ap.add_argument(
        "--bare",
        action="store_true",
        help="a bare SDK subscriber beside the monitor (bare_subscriber.py): its RSS is the floor",
    )
    ap.add_argument(
        "--bare-stats",
        type=float,
        metavar="S",
        help="the bare subscriber reads each track's stats every S seconds, as the monitor does",
    )
    args = ap.parse_args()
    total = args.minutes * 60
    stop_on_signals()
    with LocalServer.start() as srv:
        env = server_env(srv)
        port = free_port()
        watch = ["watch", "--room", ROOM, "--metrics-addr", f"127.0.0.1:{port}", *args.watch_arg]
        here = Path(__file__).parent

        def launch(argv: list[str], memlog: str | None) -> subprocess.Popen[bytes]:
            if memlog is None:
                return subprocess.Popen(
                    [sys.executable, *argv],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            if os.path.exists(memlog):
                os.unlink(memlog)
            env_m = {**env, "MEMLOG": memlog, "MEMLOG_S": str(args.report_min * 60 / 5)}
            return subprocess.Popen(
                [sys.executable, str(here / "memlog.py"), *argv],
                env=env_m,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        mon = launch(["-m", "syncmon.cli", *watch] if args.memlog is None else watch, args.memlog)
        bare_log = None if args.memlog is None else args.memlog + ".bare"
        bare = (
            launch(
                [str(here / "bare_subscriber.py"), "--room", ROOM]
                + ([] if args.bare_stats is None else ["--stats", str(args.bare_stats)]),
                bare_log,
            )
            if args.bare
            else None
        )
        pb = None if bare is None else psutil.Process(bare.pid)
        p = psutil.Process(mon.pid)
        url = f"http://127.0.0.1:{port}/metrics"
        live: dict[str, float] = {}
        pubs: dict[str, subprocess.Popen[bytes]] = {}
        n = 0

        def add() -> None:
            nonlocal n
            n += 1
            who = f"avatar-{n}"
            pubs[who] = spawn(["reference", "publish", "--room", ROOM, "--identity", who], env)
            live[who] = time.monotonic()

        def remove(who: str) -> None:
            live.pop(who, None)
            pr = pubs.pop(who)
            pr.terminate()
            pr.wait(timeout=10)

        add()
        add()
        sc = Scraper(url, live)
        sc.start()
        t0 = time.monotonic()
        next_churn = t0 + args.churn_min * 60
        next_report = t0
        restarted = flooded = False
        warm_rss: float | None = None
        warm_bare: float | None = None
        flood_thread: threading.Thread | None = None
        flood_peak = 0.0
        try:
            while (now := time.monotonic()) - t0 < total:
                el = now - t0
                if now >= next_report:
                    rss = p.memory_info().rss / 2**20
                    if warm_rss is None and el >= 120:
                        warm_rss = rss
                        warm_bare = None if pb is None else pb.memory_info().rss / 2**20
                    s = sc.last
                    restarts = sum(v for (k, _), v in s.items() if k.startswith("syncmon_task_re"))
                    print(
                        f"{el / 60:5.1f} min: RSS {rss:6.1f} MiB, fds {p.num_fds()}, "
                        f"threads {p.num_threads()}, scrapes {sc.scrapes} (failed {sc.failed}, "
                        f"missing an avatar {sc.missing}), collect errors "
                        f"{s.get(('syncmon_collect_errors_total', ()), '-')}, task restarts "
                        f"{restarts:.0f}, false pages {sc.pages}{memline(args.memlog)}"
                        + (
                            ""
                            if pb is None
                            else f"; bare subscriber RSS {pb.memory_info().rss / 2**20:6.1f} MiB"
                            f"{memline(bare_log)}"
                        ),
                        flush=True,
                    )
                    next_report += args.report_min * 60
                if now >= next_churn:
                    remove(next(iter(pubs)))
                    add()
                    next_churn += args.churn_min * 60
                if not flooded and args.flood_s > 0 and el >= total / 4:
                    flooded = True
                    flood_thread = threading.Thread(target=flood, args=(srv, args.flood_s))
                    flood_thread.start()
                if flood_thread is not None and flood_thread.is_alive():
                    flood_peak = max(flood_peak, p.memory_info().rss / 2**20)
                if not restarted and not args.no_restart and el >= total / 2:
                    restarted = True
                    srv.kill()
                    for who in list(pubs):
                        remove(who)  # they die with the server
                    time.sleep(5)
                    srv.restart()
                    add()
                    add()
                time.sleep(0.5)
        finally:
            sc.stop.set()
            end_rss = p.memory_info().rss / 2**20
            end_bare = None if pb is None else pb.memory_info().rss / 2**20
            procs = [*pubs.values(), mon, *([bare] if bare is not None else [])]
            for pr in procs:
                pr.terminate()
            for pr in procs:
                try:
                    pr.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pr.kill()
        print(
            f"RSS after warm-up {warm_rss} MiB, at the end {end_rss:.1f} MiB; flood peak "
            f"{flood_peak:.1f} MiB; scrapes {sc.scrapes}, failed {sc.failed}, missing a live "
            f"avatar's series {sc.missing}; false pages {sc.pages}"
        )
        if warm_bare is not None and end_bare is not None and warm_rss is not None:
            # the SDK's own growth under the same churn, and what the monitor adds to it
            print(
                f"bare subscriber RSS after warm-up {warm_bare:.1f} MiB, at the end "
                f"{end_bare:.1f} MiB (+{end_bare - warm_bare:.1f}); the monitor's growth beyond "
                f"it {end_rss - warm_rss - (end_bare - warm_bare):+.1f} MiB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
