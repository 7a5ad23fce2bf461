"""CPU and memory of the live monitor per avatar stream, through the real livekit-server, against
the floor: a bare SDK subscriber (``bare_subscriber.py``) that receives and decodes the same
streams in the same run.

For 640x360@25 and 1280x720@25 with 1, 2 and 4 concurrent streams (one reference publisher
process per room, one ``syncmon watch`` process for all rooms, one bare subscriber for all
rooms), prints the monitor's CPU (% of one core, from its CPU time over a measuring window after
warm-up) per stream, the bare subscriber's, their ratio, and both RSS. Goal (issue 13): ratio
<= 1.15 at 720p25, <= 1.30 at 360p25.
``--soak-minutes`` then runs one 720p stream that long and prints RSS at each minute.

Run: python benchmarks/bench_monitor.py [--window 40] [--streams 1,4] [--repeat 4]
     python benchmarks/bench_monitor.py --streams 1 --sizes 1280x720 --soak-minutes 10
     python benchmarks/bench_monitor.py --worker-processes 2 --streams 8 --sizes 640x360
(the worker's CPU and RSS are those of all its processes; the split per process is printed)
The publishers run on the same 2 cores, so the figures include some contention.
``--publisher replay`` publishes a recording of the reference avatar as it is, without encoding
(``replay/``, Go, built on first use): a few tenths of a point of a core per stream instead of
the reference publisher's encoding, so that a 2-core host can load a worker past one core.
``--parts`` prints the monitor's analysis part by part as it runs live (``parts/``: the grid,
the face, the content estimate and its stages; CPU per call and per frame, and the page faults
and preemptions each call met): an in-process harness needs received pictures to cost what
these do (docs/performance.md); the wrappers add ~5 us a call to the monitor's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncmon.live.token import publisher_token  # noqa: E402
from syncmon.reference.localserver import LocalServer, free_port  # noqa: E402

REPLAY_DIR = Path(__file__).with_name("replay")
PARTS_DIR = Path(__file__).with_name("parts")


def spawn(
    args: list[str], env: dict[str, str], source: Path | None = None
) -> subprocess.Popen[bytes]:
    """``source``: run the syncmon of that checkout instead of this one."""
    if source is not None:
        env = {**env, "PYTHONPATH": str(source)}
    return subprocess.Popen(
        [sys.executable, "-m", "syncmon.cli", *args],
        env=env,
        cwd=source,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def server_env(srv: LocalServer) -> dict[str, str]:
    """This environment with the local server's URL and credentials, for the processes a
    benchmark starts."""
    return {
        **os.environ,
        "LIVEKIT_URL": srv.url,
        "LIVEKIT_API_KEY": srv.api_key,
        "LIVEKIT_API_SECRET": srv.api_secret,
    }


def stop_on_signals() -> None:
    """A signal still runs every ``finally`` (the server, the monitor, the avatars stopped): a
    background shell ignores SIGINT, and SIGTERM would skip them."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


WARM_UP_S = 20.0  # (the comparison: 20 s of warm-up, then the window)


def replay_files(width: int, height: int, seconds: float, cache: Path) -> tuple[Path, Path]:
    """The reference avatar rendered once (``seconds`` of it, VP8 and Opus, as a WebRTC
    publisher codes them), its video as IVF and its audio as Ogg: what ``replay`` sends."""
    import av

    from syncmon.reference import ReferenceAvatar
    from syncmon.reference.render import RenderOptions, render

    base = cache / f"{width}x{height}-{seconds:.0f}s"
    ivf, ogg = base.with_suffix(".ivf"), base.with_suffix(".ogg")
    if ivf.exists() and ogg.exists():
        return ivf, ogg
    webm = base.with_suffix(".webm")
    rate = 1_200_000 if height >= 720 else 500_000
    render(ReferenceAvatar(width=width, height=height), webm, RenderOptions(seconds, rate))
    with av.open(str(webm)) as src:
        for stream, path in ((src.streams.video[0], ivf), (src.streams.audio[0], ogg)):
            part = path.with_name(path.name + ".part")
            with av.open(str(part), "w", format=path.suffix[1:]) as dst:
                out = dst.add_stream_from_template(stream)
                src.seek(0)
                for packet in src.demux(stream):
                    if packet.dts is not None:
                        packet.stream = out
                        dst.mux(packet)
            part.rename(path)  # (whole, or not there: a stopped run leaves no cut file)
    webm.unlink()
    return ivf, ogg


def replay_binary(cache: Path) -> Path:
    """``replay/`` built with this machine's Go (its modules from the Go module proxy)."""
    exe = cache / "replay"
    subprocess.run(["go", "build", "-o", str(exe), "."], cwd=REPLAY_DIR, check=True)
    return exe


def replay_publishers(
    srv: LocalServer, rooms: list[str], width: int, height: int, seconds: float
) -> list[subprocess.Popen[bytes]]:
    cache = Path(tempfile.gettempdir()) / "syncmon-bench-replay"
    cache.mkdir(exist_ok=True)
    exe = replay_binary(cache)
    ivf, ogg = replay_files(width, height, seconds, cache)
    pubs: list[subprocess.Popen[bytes]] = []
    for i, r in enumerate(rooms):
        token = publisher_token(
            api_key=srv.api_key, api_secret=srv.api_secret, room=r, identity=f"av{i}"
        )
        pubs.append(
            subprocess.Popen(
                [str(exe), "-url", srv.url, "-video", str(ivf), "-audio", str(ogg)],
                env={**os.environ, "REPLAY_TOKEN": token},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return pubs


def cpu_s(p: psutil.Process) -> float:
    """User + system CPU seconds of a process and its threads."""
    t = p.cpu_times()
    return float(t.user + t.system)


def tree_cpu_s(tree: list[psutil.Process]) -> float:
    return sum(cpu_s(x) for x in tree)


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by thread name (Linux: the SDK's native
    threads are named, Python's own all read as the interpreter's)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def per_thread(a: dict[str, float], b: dict[str, float], seconds: float) -> str:
    """The % of a core each thread name took between ``a`` and ``b``."""
    use = {k: (v - a.get(k, 0.0)) / seconds * 100 for k, v in b.items()}
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(use.items(), key=lambda x: -x[1]) if v)


def dispatch(srv: LocalServer, rooms: list[str], agent_name: str) -> None:
    """Send each room to the worker as an application would (AgentDispatch API)."""
    import asyncio

    from livekit import api

    async def go() -> None:
        http = srv.url.replace("ws://", "http://")
        async with api.LiveKitAPI(http, srv.api_key, srv.api_secret) as lk:
            for r in rooms:
                await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=agent_name, room=r)
                )

    asyncio.run(go())


def frames(url: str, tries: int = 10, name: str = "syncmon_video_frames_total") -> float:
    """Frames timed so far (``name``: or another per-avatar counter), over every room. A
    worker's scrape that missed one of its processes (``syncmon_worker_process_up`` 0: it did
    not answer in time, as on a saturated host) lacks that process's rooms: it is read again
    rather than counted short."""
    for _ in range(tries):
        with urllib.request.urlopen(url, timeout=20) as r:
            lines = r.read().decode().splitlines()
        if any(x.startswith("syncmon_worker_process_up{") and x.endswith(" 0.0") for x in lines):
            time.sleep(1.0)
            continue
        return sum(float(line.split()[-1]) for line in lines if line.startswith(name + "{"))
    raise RuntimeError(f"{url}: a worker process did not answer {tries} scrapes in a row")


def read_parts(path: Path) -> dict[str, list[float]]:
    """The monitor's running totals per analysis part (``parts/sitecustomize.py``)."""
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return {}


def print_parts(
    before: dict[str, list[float]], after: dict[str, list[float]], seconds: float, frames: float
) -> None:
    """Each part's calls, CPU and wall time per call, CPU per frame and share of a core, and
    what each call met: minor page faults and involuntary context switches (the core taken by
    another thread mid-call)."""
    for part, now in after.items():
        was = before.get(part, [0, 0.0, 0.0, 0, 0])
        n, cpu, wall, faults, preempted = (a - b for a, b in zip(now, was, strict=True))
        if n <= 0:
            continue
        print(
            f"  {part:<20} {n:6.0f} calls, {cpu * 1e3 / n:7.3f} ms CPU a call "
            f"({wall * 1e3 / n:.3f} wall), {cpu * 1e3 / max(frames, 1):.3f} ms a frame, "
            f"{cpu / seconds * 100:.2f} % of a core; {faults / n:.1f} page faults and "
            f"{preempted / n:.2f} preemptions a call",
            flush=True,
        )


def spread(name: str, values: list[float], fmt: str) -> str:
    """``name`` median (min .. max) of ``values``."""
    if not values:
        return f"{name}: none"
    v = sorted(values)
    return (
        f"{name} median {format(statistics.median(v), fmt)} "
        f"({format(v[0], fmt)} .. {format(v[-1], fmt)})"
    )


def measure(
    srv: LocalServer,
    width: int,
    height: int,
    streams: int,
    window: float,
    soak_minutes: float = 0.0,
    worker_processes: int = 0,
    extra: tuple[list[str], list[str]] = ([], []),
    baseline: Path | None = None,
    threads: bool = False,
    bare_floor: bool = True,
    replay: bool = False,
    repeat: int = 1,
    parts: bool = False,
) -> None:
    """``extra``: more arguments for the monitor, and for each publisher; ``baseline``: a
    checkout whose monitor watches the same streams beside this one's (watch only);
    ``threads``: print the monitor's and the bare subscriber's CPU per thread too (watch);
    ``bare_floor``: False leaves the bare subscriber out (the cores for more rooms: how far a
    worker goes past one core, not its ratio); ``replay``: publishers that send a recording
    without encoding it (``replay_publishers``); ``repeat``: that many measuring windows in a
    row on the same processes, each printed, then the median and range of the ratio (and of
    the baseline's difference); ``parts``: print the monitor's analysis part by part too (watch:
    ``parts/sitecustomize.py``)."""
    env = server_env(srv)
    tag = f"{width}x{height}-{streams}-{time.monotonic_ns()}"
    rooms = [f"bench-{tag}-{i}" for i in range(streams)]
    port = free_port()
    if worker_processes:
        mon_args = ["worker", "--metrics-addr", f"127.0.0.1:{port}", "--agent-name", tag]
        mon_args += ["--processes", str(worker_processes)]
    else:
        mon_args = ["watch", "--metrics-addr", f"127.0.0.1:{port}"]
        for r in rooms:
            mon_args += ["--room", r]
    parts_file, parts_dir = None, None
    mon_env = env
    if parts and not worker_processes:
        parts_dir = tempfile.TemporaryDirectory(prefix="syncmon-parts-")
        parts_file = Path(parts_dir.name) / "parts.json"
        path = os.pathsep.join(x for x in (str(PARTS_DIR), env.get("PYTHONPATH", "")) if x)
        mon_env = {**env, "PYTHONPATH": path, "SYNCMON_BENCH_PARTS": str(parts_file)}
    mon = spawn(mon_args + extra[0], mon_env)
    base: subprocess.Popen[bytes] | None = None
    if baseline is not None and not worker_processes:
        base_args = ["watch", "--metrics-addr", f"127.0.0.1:{free_port()}"]
        base = spawn(
            base_args + [x for r in rooms for x in ("--room", r)] + extra[0], env, baseline
        )
    # (the recording outlasts the measurement: replayed again from its start, its tracks are
    # published anew and the monitor starts their streams over)
    replay_s = 12 + WARM_UP_S + window + 60 * soak_minutes + 60
    pubs = (
        replay_publishers(srv, rooms, width, height, replay_s)
        if replay
        else [
            spawn(
                [
                    "reference",
                    "publish",
                    "--room",
                    r,
                    "--width",
                    str(width),
                    "--height",
                    str(height),
                    "--identity",
                    f"av{i}",
                    *extra[1],
                ],
                env,
            )
            for i, r in enumerate(rooms)
        ]
    )
    bare = (
        subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("bare_subscriber.py"))]
            + [x for r in rooms for x in ("--room", r)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        if bare_floor
        else None
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        if worker_processes:
            # a dispatch made before the worker registered is never offered to it: wait for
            # its /metrics (served once its processes are up, just before it registers)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    frames(url)
                    break
                except OSError:
                    time.sleep(0.5)
            time.sleep(5)
            dispatch(srv, rooms, tag)
        time.sleep(12 + WARM_UP_S)  # connect, first keyframes, first lip-sync windows, warm
        p = psutil.Process(mon.pid)
        b = None if bare is None else psutil.Process(bare.pid)
        tree = [p, *p.children(recursive=True)]  # a worker's processes
        q = None if base is None else psutil.Process(base.pid)
        ratios: list[float] = []
        gains: list[float] = []
        for _ in range(repeat):
            host0 = psutil.cpu_times()
            c0, f0, t0 = tree_cpu_s(tree), frames(url), time.monotonic()
            b0 = 0.0 if b is None else cpu_s(b)
            q0 = 0.0 if q is None else cpu_s(q)
            per0 = [cpu_s(x) for x in tree]
            th0 = (thread_cpu_s(p.pid), thread_cpu_s(b.pid)) if threads and b is not None else None
            parts0 = None if parts_file is None else read_parts(parts_file)
            time.sleep(window)
            c1, f1, t1 = tree_cpu_s(tree), frames(url), time.monotonic()
            b1 = 0.0 if b is None else cpu_s(b)
            host1 = psutil.cpu_times()
            q1 = 0.0 if q is None else cpu_s(q)
            per = [(cpu_s(x) - a) / (t1 - t0) * 100 for x, a in zip(tree, per0, strict=True)]
            cpu = (c1 - c0) / (t1 - t0) * 100
            floor = (b1 - b0) / (t1 - t0) * 100
            fps = (f1 - f0) / (t1 - t0)
            shed = frames(url, name="syncmon_monitor_frames_shed_total")
            rss = sum(x.memory_info().rss for x in tree) / 2**20
            what = f"worker --processes {worker_processes}" if worker_processes else "watch"
            split = " + ".join(f"{x:.0f}" for x in per) if len(tree) > 1 else ""
            # how busy the whole host was: a monitor short of frames on a saturated host is
            # the host's limit, not the monitor's
            idle = (host1.idle - host0.idle) / (t1 - t0) * 100
            if b is not None:
                ratios.append(cpu / max(floor, 1e-9))
            floor_text = (
                ""
                if b is None
                else f"bare subscriber {floor:.1f} %, ratio {cpu / max(floor, 1e-9):.2f}; "
            )
            bare_rss = "" if b is None else f"; bare {b.memory_info().rss / 2**20:.0f} MiB"
            print(
                f"{width}x{height}@25 x{streams} ({what}): monitor CPU {cpu:.1f} % of a core"
                f"{f' ({split})' if split else ''} "
                f"({cpu / streams:.1f} % per stream, {(c1 - c0) * 1000 / max(f1 - f0, 1):.2f} ms "
                f"per frame), {floor_text}"
                f"{fps / streams:.1f} fps per stream timed, {shed:.0f} frames shed, "
                f"RSS {rss:.0f} MiB "
                f"({rss / streams:.0f} MiB per room{bare_rss}); host idle {idle:.0f} % of a core "
                f"({psutil.cpu_count()} cores)",
                flush=True,
            )
            if th0 is not None:
                for who, pid, before in (("monitor", p.pid, th0[0]), ("bare", b.pid, th0[1])):
                    print(f"  {who} per thread: {per_thread(before, thread_cpu_s(pid), t1 - t0)}")
            if parts_file is not None and parts0 is not None:
                print_parts(parts0, read_parts(parts_file), t1 - t0, f1 - f0)
            if q is not None:
                qc = (q1 - q0) / (t1 - t0) * 100
                gains.append(cpu - qc)
                print(
                    f"  baseline {baseline} beside it: CPU {qc:.1f} % of a core, ratio "
                    f"{qc / max(floor, 1e-9):.2f}, RSS {q.memory_info().rss / 2**20:.0f} MiB; "
                    f"this code {cpu - qc:+.1f} points",
                    flush=True,
                )
        if repeat > 1:
            vs = spread("this code against the baseline", gains, "+.1f") + " points"
            summary = spread("ratio", ratios, ".2f") + (f"; {vs}" if gains else "")
            print(f"  over {repeat} windows: {summary}", flush=True)
        for m in range(int(soak_minutes)):
            time.sleep(60)
            print(
                f"  soak minute {m + 1}: RSS {p.memory_info().rss / 2**20:.0f} MiB, "
                f"frames {frames(url):.0f}",
                flush=True,
            )
    finally:
        procs = [*pubs, mon, *([] if bare is None else [bare]), *([] if base is None else [base])]
        for x in procs:
            x.terminate()
        for x in procs:
            try:
                x.wait(timeout=10)
            except subprocess.TimeoutExpired:
                x.kill()
        if parts_dir is not None:
            parts_dir.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=40.0, help="measuring window (s)")
    ap.add_argument("--streams", default="1,2,4")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measuring windows in a row on the same processes (the ratio's median and range "
        "printed after them: one window reads a few points of a core apart from the next)",
    )
    ap.add_argument(
        "--soak-minutes",
        type=float,
        default=0.0,
        help="then run one 720p stream this long, printing RSS every minute",
    )
    ap.add_argument(
        "--worker-processes",
        type=int,
        default=0,
        help="measure `syncmon worker --processes N` (rooms by dispatch) instead of watch",
    )
    ap.add_argument("--sizes", default="640x360,1280x720")
    ap.add_argument(
        "--monitor-arg",
        action="append",
        default=[],
        help="one more argument for the monitor (repeatable), e.g. --monitor-arg=--no-face",
    )
    ap.add_argument(
        "--publisher-arg",
        action="append",
        default=[],
        help="one more argument for each publisher (repeatable), e.g. --publisher-arg=--viseme",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        help="a checkout (e.g. `git worktree add /tmp/base HEAD~1`) whose `syncmon watch` "
        "runs beside this one's on the same streams: its CPU in the same run",
    )
    ap.add_argument(
        "--threads",
        action="store_true",
        help="also print the monitor's and the bare subscriber's CPU per thread (Linux)",
    )
    ap.add_argument(
        "--parts",
        action="store_true",
        help="also print the monitor's analysis part by part, as it runs live: CPU per call "
        "and per frame, page faults and preemptions per call (watch; parts/sitecustomize.py)",
    )
    ap.add_argument(
        "--no-bare",
        action="store_true",
        help="no bare subscriber beside the monitor (its cores for more rooms: how far a "
        "worker goes past one core; no ratio printed)",
    )
    ap.add_argument(
        "--publisher",
        choices=("reference", "replay"),
        default="reference",
        help="reference: `syncmon reference publish` (renders and encodes each frame); "
        "replay: a recording of it sent as it is (replay/, needs Go)",
    )
    args = ap.parse_args()
    if args.publisher == "replay" and args.publisher_arg:
        ap.error("--publisher-arg is for the reference publisher, not --publisher replay")
    extra = (args.monitor_arg, args.publisher_arg)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    with LocalServer.start() as srv:
        for w, h in sizes:
            for n in (int(x) for x in args.streams.split(",")):
                measure(
                    srv,
                    w,
                    h,
                    n,
                    args.window,
                    worker_processes=args.worker_processes,
                    extra=extra,
                    baseline=args.baseline,
                    threads=args.threads,
                    bare_floor=not args.no_bare,
                    replay=args.publisher == "replay",
                    repeat=args.repeat,
                    parts=args.parts,
                )
        if args.soak_minutes:
            measure(srv, 1280, 720, 1, args.window, soak_minutes=args.soak_minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
