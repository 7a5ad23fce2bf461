"""How late the reference publisher sends its audio, through the real livekit-server.

The publisher's audio source has no queue: a 10 ms frame sent late may leave the receiver's
jitter buffer short (it conceals, then stretches), and what a viewer plays drifts from what was
sent. This publishes the reference avatar (by default the costliest face to draw: a viseme
mouth on a head that nods and rolls with the speech) beside a ``syncmon watch`` on its room,
and prints how late each audio frame was handed to the source against its schedule, after
the first second:

    python benchmarks/bench_publisher.py [--seconds 30] [--runs 2] [--plain] [--fps 25]

Compare two revisions by running this from each one's checkout (the checkout's own package
comes first on the path).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

sys.path.insert(0, os.getcwd())

import numpy as np

from syncmon.cli.lab import build_avatar
from syncmon.live.token import publisher_token
from syncmon.reference.localserver import LocalServer
from syncmon.reference.publisher import ReferencePublisher


def face_args(plain: bool, fps: float) -> argparse.Namespace:
    return argparse.Namespace(
        offset_ms=80.0, jitter_ms=0.0, drop_rate=0.0, duplicate_rate=0.0, freeze=[],
        audio_gap=[], audio_stall=[], clock_drift_ppm=0.0, processing_delay_ms=0.0, seed=0,
        wav=None, lip_still=[], face="synthetic", viseme=not plain,
        head_motion_px=0.0 if plain else 4.0, head_roll_deg=0.0 if plain else 2.0,
        head_lead_ms=200.0, width=640, height=360, fps=fps,
    )  # fmt: skip


def run(srv: LocalServer, seconds: float, plain: bool, fps: float) -> np.ndarray:
    """Lateness (ms) of every audio frame after the first second."""
    av = build_avatar(face_args(plain, fps))
    token = publisher_token(
        api_key=srv.api_key, api_secret=srv.api_secret, room="bench", identity="avatar"
    )
    pub = ReferencePublisher(av, url=srv.url, token=token)
    late: list[float] = []
    read = av.audio

    def audio(start: int, n: int) -> np.ndarray:  # called as each frame is due to go out
        assert pub.t0 is not None
        late.append(time.monotonic() - (pub.t0 + start / av.sample_rate))
        return read(start, n)

    av.audio = audio  # type: ignore[method-assign]
    asyncio.run(pub.run(seconds))
    return np.asarray(late[int(1.0 / 0.010) :]) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--plain", action="store_true", help="the reference face (cheap to draw)")
    ap.add_argument("--fps", type=float, default=25.0)
    a = ap.parse_args()
    with LocalServer.start() as srv:
        srv.wait_ready()
        env = dict(
            os.environ,
            LIVEKIT_URL=srv.url,
            LIVEKIT_API_KEY=srv.api_key,
            LIVEKIT_API_SECRET=srv.api_secret,
        )
        watch = ["watch", "--room", "bench", "--metrics-port", "0"]
        mon = subprocess.Popen(
            [sys.executable, "-m", "syncmon.cli", *watch],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for k in range(a.runs):
                x = run(srv, a.seconds, a.plain, a.fps)
                p50, p95, p99 = np.percentile(x, [50, 95, 99])
                print(
                    f"run {k + 1}: {x.size} audio frames, sent late by p50 {p50:.1f} ms, "
                    f"p95 {p95:.1f}, p99 {p99:.1f}, max {x.max():.1f}; "
                    f"{int((x > 10).sum())} over 10 ms",
                    flush=True,
                )
        finally:
            mon.terminate()
            mon.wait()


if __name__ == "__main__":
    main()
