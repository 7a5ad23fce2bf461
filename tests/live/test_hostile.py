"""A room participant that floods and poisons the timing-mark topic, through the real server.

An avatar worker (kind agent, ``lk.publish_on_behalf``) is a trusted role but its packets are
still input: it sends garbage, oversized payloads, marks with absurd numbers (``seq`` 1e999,
``t_audio_us`` 10**400: the one that killed an avatar's audio task), and a flood of well-formed
marks that never match. A user sends marks too. The monitor must count what it refused, keep
every task alive and its memory bounded, and keep measuring the real avatar next to it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import psutil
import pytest

from syncmon.live.token import publisher_token
from syncmon.marks import TOPIC
from syncmon.reference.localserver import LocalServer

from .conftest import Proc, sample, scrape, start_monitor, start_publisher, wait_for

pytestmark = pytest.mark.slow
FLOOD_PACKETS = 1200  # from each of the two participants: ~125/s, as the SDK delivered


def payloads(i: int) -> bytes:
    good = {"v": 1, "seq": i, "t_audio_us": i, "skew_us": 0, "frame_id": 10**12 + i}
    good["env"] = [0.1] * 160
    kind = i % 5
    if kind == 0:
        return b"\xff\x00 not json " * 50
    if kind == 1:
        return b"x" * 12_000
    if kind == 2:
        return json.dumps({**good, "seq": "SEQ"}).replace('"SEQ"', "1e999").encode()
    if kind == 3:
        return (
            json.dumps({**good, "t_audio_us": 0})
            .replace('"t_audio_us": 0', '"t_audio_us": 1' + "0" * 400)
            .encode()
        )
    return json.dumps(good).encode()  # well-formed, never matches


def test_flood_and_poison_marks_are_refused_counted_and_bounded(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    from livekit import rtc

    room = "hostile"
    mon = start_monitor(procs, livekit, room)
    start_publisher(procs, livekit, room, "--duration", "60", identity="real-avatar")
    wait_for(lambda: sample(scrape(mon.metrics_url), "syncmon_video_frames_total", room=room), 25)
    rss0 = psutil.Process(mon.proc.pid).memory_info().rss

    async def attack() -> tuple[int, int]:
        rooms = []
        for ident, agent in (("evil-avatar", True), ("a-user", False)):
            r = rtc.Room()
            tok = publisher_token(
                api_key=livekit.api_key,
                api_secret=livekit.api_secret,
                room=room,
                identity=ident,
                agent=agent,
                attributes={"lk.publish_on_behalf": "voice-agent"},
            )
            await r.connect(livekit.url, tok)
            rooms.append(r)
        evil, user = rooms
        src = rtc.AudioSource(48000, 1)
        await evil.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("voice", src),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        noise = rtc.AudioFrame(bytes(960), 48000, 1, 480)
        sent = 0
        for sent in range(1, FLOOD_PACKETS + 1):
            for r in (evil, user):
                await r.local_participant.publish_data(payloads(sent), reliable=True, topic=TOPIC)
            await src.capture_frame(noise)
            await asyncio.sleep(0.008)
        for r in rooms:
            await r.disconnect()
        return sent, 0

    sent, _ = asyncio.run(attack())
    assert sent == FLOOD_PACKETS
    s = scrape(mon.metrics_url)
    refused = sample(s, "syncmon_malformed_total", participant="evil-avatar", what="mark")
    # 4 in 5 of the avatar's packets are malformed (the fifth is well-formed and bounded)
    assert refused is not None and refused >= 0.7 * 0.8 * sent, (refused, sent)
    assert not [k for k in s if ("participant", "a-user") in k[1]]  # a user is nobody
    assert not [k for k in s if k[0] == "syncmon_task_restarts_total"], "a task died"
    rss1 = psutil.Process(mon.proc.pid).memory_info().rss
    assert rss1 - rss0 <= 60 * 2**20, f"RSS grew {(rss1 - rss0) / 2**20:.0f} MiB"
    # the real avatar is measured on
    f0 = sample(s, "syncmon_video_frames_total", participant="real-avatar")
    wait_for(
        lambda: (sample(scrape(mon.metrics_url), "syncmon_video_frames_total",
                        participant="real-avatar") or 0) > (f0 or 0) + 25,
        10,
    )  # fmt: skip
    assert mon.stop() == 0
    lines = mon.log().splitlines()
    # one warning per participant and kind a minute, not one per packet
    assert sum("ignoring a timing mark" in ln for ln in lines) <= 2, len(lines)
    assert not any("Traceback" in ln for ln in lines)
