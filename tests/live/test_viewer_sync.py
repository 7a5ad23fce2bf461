"""Which offset a viewer sees, on both livekit-server configurations: by default a
participant's audio and video reach viewers as two WebRTC streams and a player plays each as it
arrives (the receiver's own jitter-buffer difference is part of what the viewer sees); with
``room.sync_streams: true`` they are one stream and the player lip-syncs them (it plays the
sender's offset). The monitor tells the two apart from the playout stamps libwebrtc reports
only for a synced pair, says which in /report, and reports ``content`` accordingly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from syncmon.reference.localserver import LocalServer

from .conftest import Proc, avatar_report, start_monitor, start_publisher, wait_for

pytestmark = pytest.mark.slow

SENT_MS = 100


@pytest.fixture
def synced_server() -> Iterator[LocalServer]:
    srv = LocalServer.start(sync_streams=True)
    try:
        yield srv
    finally:
        srv.stop()


def readings(url: str, room: str, n: int) -> list[dict[str, object]]:
    """``n`` reports a second apart, once the content offset has been published for 15 s of
    speech (the receiver's jitter-buffer averages settle over the first polls)."""
    t0 = time.monotonic()
    wait_for(lambda: (avatar_report(url, room, "avatar") or {}).get("content_estimates"), 30)
    wait_for(lambda: time.monotonic() - t0 >= 15.0, 20)  # the workload: 15 s of speech
    out = []
    for _ in range(n):
        a = avatar_report(url, room, "avatar")
        assert a is not None
        out.append(a)
        wait_for(lambda a=a: avatar_report(url, room, "avatar") != a, 5)  # type: ignore[misc]
    return out


def test_default_server_viewers_play_as_received(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    room = "viewer-default"
    mon = start_monitor(procs, livekit, room)
    start_publisher(procs, livekit, room, "--offset-ms", str(SENT_MS), "--duration", "40")
    for a in readings(mon.metrics_url, room, 4):
        assert a["viewer_sync"] is False, a
        content = a["offset_ms"]["content"]  # type: ignore[index]
        # content is the offset as this receiver got it (no jitter-buffer correction) ...
        assert content == a["received_content_ms"], a
        # ... which is the sender's plus the receiver's own A/V buffer difference
        bias = float(a["receiver_bias_ms"])  # type: ignore[arg-type]
        assert abs(content - (SENT_MS + bias)) <= 25, a
        assert a["playout_source"] == "jitter_buffer", a


def test_sync_streams_server_viewers_play_the_senders_offset(
    synced_server: LocalServer, procs: Callable[..., Proc]
) -> None:
    room = "viewer-synced"
    mon = start_monitor(procs, synced_server, room)
    start_publisher(procs, synced_server, room, "--offset-ms", str(SENT_MS), "--duration", "40")
    for a in readings(mon.metrics_url, room, 4):
        assert a["viewer_sync"] is True, a
        content = a["offset_ms"]["content"]  # type: ignore[index]
        assert abs(content - SENT_MS) <= 25, a
        assert a["playout_source"] == "estimated_playout_timestamp", a
