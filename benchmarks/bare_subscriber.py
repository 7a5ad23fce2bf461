"""The floor syncmon's cost is compared with: a livekit SDK subscriber that receives and decodes.

It joins each room as a hidden subscriber (the monitor's own token), and for every remote track
opens the same streams the monitor opens -- video with an unbounded native queue, audio at
16 kHz mono in 50 ms frames -- and does nothing with a frame but count it. What it costs is what
receiving the stream costs; what the monitor costs beyond it is syncmon's.

    python benchmarks/bare_subscriber.py --room R [--room R2 ...]   (LIVEKIT_* from the env)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livekit import rtc  # noqa: E402

from syncmon.live.avatar import UnboundedVideoStream  # noqa: E402
from syncmon.live.token import monitor_token  # noqa: E402


async def drain(stream: Any, counts: dict[str, int], kind: str) -> None:
    async for _ in stream:
        counts[kind] += 1


async def poll_stats(track: rtc.Track, every_s: float) -> None:
    """The inbound-rtp stats, read as the monitor reads them (for a soak's comparison)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await track.get_stats()
        except Exception:  # the track went away under the call: the stream's end stops this
            return


async def run(rooms: list[str], stats_s: float | None = None) -> None:
    url = os.environ["LIVEKIT_URL"]
    key, secret = os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    counts = {"video": 0, "audio": 0}
    tasks: set[asyncio.Task[None]] = set()
    streams: dict[str, tuple[Any, asyncio.Task[None]]] = {}  # by track sid
    joined = []
    for name in rooms:
        room = rtc.Room()

        def subscribed(track: rtc.Track, *_: Any) -> None:
            if track.kind == rtc.TrackKind.KIND_VIDEO:
                video = UnboundedVideoStream(track, capacity=0)
                t = asyncio.create_task(drain(video, counts, "video"))
            elif track.kind == rtc.TrackKind.KIND_AUDIO:
                stream = rtc.AudioStream(
                    track, sample_rate=16000, num_channels=1, frame_size_ms=50, capacity=0
                )
                t = asyncio.create_task(drain(stream, counts, "audio"))
            else:
                return
            streams[track.sid] = (video if track.kind == rtc.TrackKind.KIND_VIDEO else stream, t)
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            if stats_s is not None:
                ts = asyncio.create_task(poll_stats(track, stats_s))
                t.add_done_callback(lambda _, ts=ts: ts.cancel())
                tasks.add(ts)
                ts.add_done_callback(tasks.discard)

        def unsubscribed(track: rtc.Track, *_: Any) -> None:
            # stopped and closed as the monitor stops its own (a soak's avatars come and go):
            # only closed, the video streams stayed alive with the tasks draining them (9 with
            # 2 tracks after 8 replacements)
            if (found := streams.pop(track.sid, None)) is not None:
                stream, drainer = found
                drainer.cancel()
                t = asyncio.create_task(stream.aclose())
                tasks.add(t)
                t.add_done_callback(tasks.discard)

        room.on("track_subscribed", subscribed)
        room.on("track_unsubscribed", unsubscribed)
        token = monitor_token(api_key=key, api_secret=secret, room=name, identity="bare")
        await room.connect(url, token)
        joined.append(room)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for t in tasks:
        t.cancel()
    for room in joined:
        await room.disconnect()
    print(f"frames: video {counts['video']}, audio {counts['audio']}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--room", action="append", required=True)
    ap.add_argument(
        "--stats", type=float, metavar="S", help="read each track's stats every S seconds"
    )
    args = ap.parse_args()
    asyncio.run(run(args.room, args.stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
