"""End to end through the real livekit-server: the instrumented reference avatar (livekit-agents
AvatarRunner) with a sender clock 3 s off and an injected pacing skew, the monitor's
``timestamp`` offset, and the spans and metrics reaching an OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from syncmon.reference.localserver import LocalServer

from .conftest import Proc, lk_env, sample, scrape, start_monitor, wait_for
from .otlp import OtlpReceiver

LAGS_MS = (0, 160)  # taken in turn, 10 s each: the sender skew changes under the monitor
MIN_EACH = 8  # estimates collected at either lag (about 3 of each 10 s with marks every second)
# the stream's seconds before estimates are collected: where the first estimates came before
# (the first, ~10 s in, and 20 s more)
SETTLE_S = 30.0


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def avatar_report(url: str, room: str, identity: str) -> dict[str, Any] | None:
    with urllib.request.urlopen(url + "/report", timeout=5) as r:
        rep = json.load(r)
    a: dict[str, Any] | None = rep["rooms"].get(room, {}).get("avatars", {}).get(identity)
    return a


# The truth here is the sender's skew plus a transport taken as constant, and the transport
# itself moves by a few ms over a run's first minute (the monitor's own buffers do not follow
# it: the sender's side ramping up); in 3 of 13 quiet local runs, on this code and the code
# before it alike, the first estimates after the settling time read 5-7 ms from the rest,
# which a 95th percentile over ~16 cannot absorb. A miss runs the test again, twice at most.
@pytest.mark.flaky(reruns=2, only_rerun=["AssertionError"])
def test_timestamp_offset_with_sender_clock_3s_off_and_spans_over_otlp(
    livekit: LocalServer, procs: Callable[..., Proc], otlp: OtlpReceiver
) -> None:
    room, identity = "instrumented", "av"
    mon = start_monitor(procs, livekit, room)
    env = {
        **lk_env(livekit),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "500",
        "OTEL_SERVICE_NAME": "reference-avatar",
    }
    av = procs(
        "reference",
        "avatar",
        "--room",
        room,
        "--identity",
        identity,
        "--video-lag-ms",
        ",".join(str(x) for x in LAGS_MS),
        "--clock-shift-s",
        "3",
        "--otlp",
        "--duration",
        "150",
        env=env,
    )

    def estimates() -> int:
        a = avatar_report(mon.metrics_url, room, identity)
        return 0 if a is None else int(a["timestamp_estimates"])

    def received_s() -> float:
        a = avatar_report(mon.metrics_url, room, identity)
        v = None if a is None else a["video"]
        return 0.0 if not v or not v["fps"] else float(v["frames"]) / float(v["fps"])

    wait_for(estimates, timeout=45)
    # the receiver's jitter buffers settle over the first seconds (its audio delay is anchored
    # on 8 s of stats), and the transport over the first half-minute (above): once the monitor
    # has received SETTLE_S of the avatar's video, one estimate per mark point (an utterance's
    # start and each second of it; none for a point whose audio did not play out as sent),
    # each new one collected until MIN_EACH have been taken at either lag (at most 90 s)
    wait_for(lambda: received_s() >= SETTLE_S, timeout=SETTLE_S + 45)
    pairs: dict[int, tuple[float, float]] = {}

    def at_each_lag() -> int:
        skews = np.array([p[1] for p in pairs.values()])
        mid = (min(LAGS_MS) + max(LAGS_MS)) / 2
        return min(int(np.sum(skews < mid)), int(np.sum(skews >= mid)))

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and av.proc.poll() is None and at_each_lag() < MIN_EACH:
        a = avatar_report(mon.metrics_url, room, identity)
        assert a is not None
        n = int(a["timestamp_estimates"])
        if (
            n not in pairs
            and a["offset_ms"]["timestamp"] is not None
            and a["sender_skew_ms"] is not None
        ):
            pairs[n] = (a["offset_ms"]["timestamp"], a["sender_skew_ms"])
        time.sleep(0.25)
    assert len(pairs) >= 8, pairs
    ts = np.array([p[0] for p in pairs.values()])
    skew = np.array([p[1] for p in pairs.values()])
    # the injected pacing skew is in what the sender measured (plus its own pacing)
    assert np.all(skew >= min(LAGS_MS) - 5) and np.all(skew <= max(LAGS_MS) + 80), skew
    # truth: the sender's skew, utterance by utterance, measured on the sender's clock (its
    # audio timed where it leaves the audio source), plus the transport's own A/V difference,
    # constant on loopback (Opus packetization against video encode/decode, a few ms). The
    # sender clock's +3 s cancels out (else every value would be 3000 ms off).
    transport = ts - skew
    pairs_txt = list(zip(ts, skew, strict=True))
    t0 = float(np.median(transport))
    assert -25.0 <= t0 <= 10.0, pairs_txt
    err = np.abs(transport - t0)
    # within 5 ms of the truth at p95 (README: 1-4 ms in quiet runs and with a busy-loop
    # process hogging a core), and none a gross mismatch (a wrong utterance or a timer step)
    assert float(np.percentile(err, 95)) <= 5.0, pairs_txt
    assert np.max(err) <= 12.0, pairs_txt
    # the skew changed while estimates were taken, and the offset followed it
    assert at_each_lag() >= MIN_EACH, pairs_txt
    hi = skew >= (min(LAGS_MS) + max(LAGS_MS)) / 2
    d_ts = float(np.median(ts[hi]) - np.median(ts[~hi]))
    d_skew = float(np.median(skew[hi]) - np.median(skew[~hi]))
    assert abs(d_ts - d_skew) <= 6.0, (d_ts, d_skew, pairs_txt)

    # the gauge is the latest estimate the report has (read between two reports that agree:
    # an estimate may land between the last one collected and the scrape)
    for _ in range(5):
        before = avatar_report(mon.metrics_url, room, identity)
        s = scrape(mon.metrics_url)
        after = avatar_report(mon.metrics_url, room, identity)
        assert before is not None and after is not None
        if before["timestamp_estimates"] == after["timestamp_estimates"]:
            break
    off = sample(
        s, "syncmon_av_offset_seconds", room=room, participant=identity, method="timestamp"
    )
    assert off is not None and abs(off * 1000 - after["offset_ms"]["timestamp"]) <= 0.1
    content = sample(
        s, "syncmon_av_offset_seconds", room=room, participant=identity, method="content"
    )
    # the reference generator's mouth follows its audio with zero phase: content (an 8 s window,
    # across the skew's switches) stays within the range the timestamp offsets span -- less the
    # receiver's own A/V buffer difference, which a viewer that does not lip-sync the tracks
    # (this server's default) plays too, and timestamp (capture to arrival) leaves out
    viewer_ms = 0.0 if after["viewer_sync"] else float(after["receiver_bias_ms"])
    assert content is not None
    assert ts.min() - 25 <= content * 1000 - viewer_ms <= ts.max() + 25, (content, viewer_ms)

    # spans and metrics over OTLP/HTTP, joined to the monitor's labels
    av.stop()
    wait_for(lambda: any(sp["name"] == "avatar.utterance" for sp in otlp.spans), timeout=10)
    utt = [sp for sp in otlp.spans if sp["name"] == "avatar.utterance"]
    assert len(utt) >= 8
    for sp in utt:
        a = sp["attributes"]
        assert a["lk.room_name"] == room
        assert a["lk.participant_identity"] == identity
        assert str(a["lk.track_sid"]).startswith("TR_")
        assert sp["resource"]["service.name"] == "reference-avatar"
    assert any(e[0] == "avatar.frame" for sp in utt for e in sp["events"])
    # each timing mark is an event of its utterance's span, with the sender skew it carried
    span_skews = [
        e[1]["syncmon.sender_av_skew_ms"]
        for sp in utt
        for e in sp["events"]
        if e[0] == "avatar.timing_mark"
    ]
    assert all(
        sp["attributes"]["syncmon.sender_av_skew_ms"] in span_skews
        for sp in utt
        if "syncmon.sender_av_skew_ms" in sp["attributes"]
    )
    # the monitor's estimates carry the same sender skews the spans do: every one (a mark that
    # resolved after its utterance ended is an event of that utterance's span, and the
    # utterance going out when the avatar stopped ends its span as the runner closes)
    unmatched = [k for k in skew if min(abs(k - x) for x in span_skews) > 0.1]
    assert not unmatched, (unmatched, span_skews)
    for name in (
        "syncmon.agent.processing_time",
        "syncmon.agent.sender_av_skew",
        "syncmon.agent.sender_av_skew_abs",
        "syncmon.agent.sync_video_queue",
        "syncmon.agent.audio_source_queued",
        "syncmon.agent.runtime_queue",
    ):
        points = otlp.metrics.get(name)
        assert points, f"{name} not received"
        assert all(p.get("lk.room_name") == room for p in points)
        assert any(p.get("lk.participant_identity") == identity for p in points)
    assert mon.stop() == 0
