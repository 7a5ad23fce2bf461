"""Overhead of syncmon.instrument on an avatar worker.

1. Per frame (µs): the instrumentation's hooks for one generated frame and its audio chunk
   (generator output observed, the frame's capture stamped, one histogram per value, the span
   event of every 25th frame), on real OTel SDK providers (batch span processor, in-memory
   exporter; periodic-free in-memory metric reader), timed over many frames in this process.
2. Share of the worker's CPU at 25 fps: the reference avatar worker (livekit-agents
   AvatarRunner, 640x360@25) through the real livekit-server, its process CPU over a window with
   and without ``--no-instrument``, and the per-frame figure x 25 against the uninstrumented CPU.

Run: python benchmarks/bench_instrument.py [--frames 20000] [--window 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import numpy as np
import psutil
from livekit import rtc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from syncmon.instrument import AvatarInstrumentor
from syncmon.reference.localserver import LocalServer, free_port
from syncmon.reference.worker import WorkerProfile, make_runner


def per_frame_us(n: int) -> float:
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    inst = AvatarInstrumentor()
    inst.instrument(tracer_provider=tp, meter_provider=mp)
    try:

        async def run() -> float:
            runner = await make_runner(rtc.Room(), WorkerProfile(width=160, height=90))
            t = inst.trackers()[-1]
            video = rtc.VideoFrame(160, 90, rtc.VideoBufferType.I420, bytes(160 * 90 * 3 // 2))
            pcm = (np.sin(np.arange(640) / 5) * 8000).astype(np.int16).tobytes()
            audio = rtc.AudioFrame(pcm, 16000, 1, 640)
            t0 = time.perf_counter()
            for k in range(n):
                if k % 50 == 0:
                    t.on_output(None, "end")  # an utterance of 2 s
                t.on_push_audio(audio, False)
                t.on_output(video, "video")
                t.on_output(audio, "audio")
                t.on_capture(video, None)
            dt = time.perf_counter() - t0
            await runner._av_sync.aclose()
            return dt / n * 1e6

        return asyncio.run(run())
    finally:
        inst.uninstrument()
        tp.shutdown()


# join, publish, the first utterances -- and the audio tap's calibration (it subscribes to the
# avatar's own audio for its first three or so utterances, ~3.5 % of a core, then closes)
WARM_UP_S = 25.0


def worker_cpu(window: float, instrument: bool) -> float:
    srv = LocalServer.start(build=False)
    env = {
        **os.environ,
        "LIVEKIT_URL": srv.url,
        "LIVEKIT_API_KEY": srv.api_key,
        "LIVEKIT_API_SECRET": srv.api_secret,
    }
    port = free_port()
    mon = subprocess.Popen(
        [sys.executable, "-m", "syncmon.cli", "watch", "--room", "b", "--metrics-addr",
         f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    args = ["reference", "avatar", "--room", "b", "--duration", str(window + WARM_UP_S + 10)]
    if instrument:
        args += ["--otel-metrics-addr", f"127.0.0.1:{free_port()}"]
    else:
        args += ["--no-instrument"]
    av = subprocess.Popen(
        [sys.executable, "-m", "syncmon.cli", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        p = psutil.Process(av.pid)
        time.sleep(WARM_UP_S)
        c0, t0 = p.cpu_times(), time.monotonic()
        time.sleep(window)
        c1, t1 = p.cpu_times(), time.monotonic()
        return 100.0 * ((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0)
    finally:
        av.terminate()
        mon.terminate()
        av.wait(timeout=10)
        mon.wait(timeout=10)
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--window", type=float, default=30.0)
    args = ap.parse_args()
    us = per_frame_us(args.frames)
    print(f"instrumentation per frame (video + its audio chunk): {us:.1f} us")
    base = worker_cpu(args.window, instrument=False)
    inst = worker_cpu(args.window, instrument=True)
    print(
        f"reference avatar worker CPU at 25 fps: {base:.1f} % of a core uninstrumented, "
        f"{inst:.1f} % instrumented with Prometheus export "
        f"(difference {inst - base:+.1f} points; noisy)"
    )
    share = 100.0 * us * 25 / 1e6 / (base / 100.0)
    print(f"instrumentation share of the worker's CPU (per-frame cost x 25 fps): {share:.2f} %")


if __name__ == "__main__":
    main()
