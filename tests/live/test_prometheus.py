"""A real Prometheus scrapes a real syncmon watching the reference avatar via livekit-server."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from syncmon.reference.localserver import LocalServer

from .conftest import Proc, start_monitor, start_publisher, viewer_truth_ms, wait_for
from .prom import Prometheus

pytestmark = pytest.mark.slow


def test_offset_read_back_through_prometheus_http_api(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    room = "prom"
    mon = start_monitor(procs, livekit, room)
    start_publisher(procs, livekit, room, "--offset-ms", "100", "--duration", "45")
    prom = Prometheus([mon.metrics_url.removeprefix("http://")])
    try:
        res = wait_for(
            lambda: prom.query(f'syncmon_av_offset_seconds{{room="{room}",method="content"}}'),
            timeout=35,
        )
        assert isinstance(res, list) and len(res) == 1
        series = res[0]
        assert series["metric"]["participant"] == "avatar"
        truth = viewer_truth_ms(mon.metrics_url, room, "avatar", 100)  # what a viewer plays
        assert abs(float(series["value"][1]) * 1000 - truth) <= 25, (series, truth)
        up = prom.query(f'syncmon_track_up{{room="{room}"}}')
        assert {s["metric"]["kind"]: s["value"][1] for s in up} == {"audio": "1", "video": "1"}
        # a rate needs two scrapes inside its range
        rate = wait_for(
            lambda: prom.query(f'rate(syncmon_video_frames_total{{room="{room}"}}[5s])'),
            timeout=10,
        )
        assert isinstance(rate, list) and 20 <= float(rate[0]["value"][1]) <= 30
    finally:
        prom.stop()
