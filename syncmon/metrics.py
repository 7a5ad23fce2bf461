"""Prometheus exposition of the monitor's state.

A custom collector renders the current state at scrape time (the blackbox/node exporter
manner): nothing is registered at import, each monitor owns its registry, the series of a room
disappear with the room, and a value that is unknown is absent rather than a made-up zero.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import metric_names as n
from .analysis.session import METHODS, SyncAnalyzer

log = logging.getLogger(__name__)
KINDS = ("audio", "video")


class Buckets:
    """A fixed-bucket histogram (cumulative on render)."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.sum += v

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for b, c in zip(self.bounds, self.counts, strict=False):
            acc += c
            out.append((repr(float(b)), float(acc)))
        out.append(("+Inf", float(acc + self.counts[-1])))
        return out


@dataclass
class RtpStats:
    """The subscriber's inbound-rtp view of one track (None: not reported)."""

    jitter_s: float | None = None
    packets_lost: int | None = None
    jitter_buffer_delay_s: float | None = None
    concealed_samples: int | None = None


@dataclass
class AvatarState:
    """Everything exported for one avatar participant in one room."""

    room: str
    participant: str
    analyzer: SyncAnalyzer
    offset_abs: dict[str, Buckets] = field(
        default_factory=lambda: {m: Buckets(n.OFFSET_ABS_BUCKETS) for m in METHODS}
    )
    frame_interval: Buckets = field(default_factory=lambda: Buckets(n.FRAME_INTERVAL_BUCKETS))
    track_up: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(KINDS, False))
    last_frame_unix: dict[str, float] = field(default_factory=dict)
    rtp: dict[str, RtpStats] = field(default_factory=lambda: {k: RtpStats() for k in KINDS})

    def observe_offset(self, method: str, offset_s: float) -> None:
        self.offset_abs[method].observe(abs(offset_s))

    def frame_arrived(self, kind: str) -> None:
        self.last_frame_unix[kind] = time.time()


@dataclass
class RoomState:
    connected: bool = False
    reconnects: int = 0
    avatars: dict[str, AvatarState] = field(default_factory=dict)


class MonitorState:
    """All rooms one monitor process watches; what /metrics and /report render."""

    def __init__(self, *, max_rooms: int = 100) -> None:
        self.max_rooms = max_rooms
        self.rooms: dict[str, RoomState] = {}
        self.rooms_rejected = 0

    def add_room(self, room: str) -> RoomState | None:
        """The room's state, or None (counted) when the cap is reached."""
        if room in self.rooms:
            return self.rooms[room]
        if len(self.rooms) >= self.max_rooms:
            self.rooms_rejected += 1
            return None
        self.rooms[room] = RoomState()
        return self.rooms[room]

    def remove_room(self, room: str) -> None:
        self.rooms.pop(room, None)

    def avatars(self) -> Iterator[AvatarState]:
        # snapshots: worker jobs change the dicts from their own threads
        for r in list(self.rooms.values()):
            yield from list(r.avatars.values())

    def report(self) -> dict[str, object]:
        return {
            "rooms": {
                name: {
                    "connected": r.connected,
                    "avatars": {
                        a.participant: self.avatar_report(a) for a in list(r.avatars.values())
                    },
                }
                for name, r in list(self.rooms.items())
            }
        }

    @staticmethod
    def avatar_report(a: AvatarState) -> dict[str, object]:
        rep = a.analyzer.report()
        rep["tracks_up"] = dict(a.track_up)
        return rep


class MonitorCollector(Collector):
    """Renders a MonitorState as the metric families of shared/DESIGN.md."""

    def __init__(self, state: MonitorState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception:  # a broken avatar must not fail the scrape
            log.exception("metrics collection failed")

    def _collect(self) -> Iterator[Metric]:
        rp = [n.LABEL_ROOM, n.LABEL_PARTICIPANT]
        st = self.state

        def g(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=rp + (extra or []))

        def c(name: str, doc: str, extra: list[str] | None = None) -> CounterMetricFamily:
            return CounterMetricFamily(name.removesuffix("_total"), doc, labels=rp + (extra or []))

        connected = GaugeMetricFamily(
            n.ROOM_CONNECTED, "1 while connected to the room", labels=[n.LABEL_ROOM]
        )
        reconnects = CounterMetricFamily(
            n.RECONNECTS.removesuffix("_total"), "Reconnections to the room", labels=[n.LABEL_ROOM]
        )
        for name, r in list(st.rooms.items()):
            connected.add_metric([name], 1.0 if r.connected else 0.0)
            reconnects.add_metric([name], r.reconnects)
        yield connected
        yield reconnects
        rejected = CounterMetricFamily(
            n.ROOMS_REJECTED.removesuffix("_total"),
            "Rooms not monitored because the cap was reached",
        )
        rejected.add_metric([], st.rooms_rejected)
        yield rejected

        offset = g(n.AV_OFFSET, "Latest windowed lip-sync offset t_video - t_audio", ["method"])
        conf = g(n.AV_OFFSET_CONFIDENCE, "Confidence of the latest estimate, 0..1", ["method"])
        offset_abs = HistogramMetricFamily(
            n.AV_OFFSET_ABS, "|offset| per estimate", labels=rp + ["method"]
        )
        drift = g(n.AV_DRIFT, "Slope of the lip-sync offset (seconds per minute)")
        frames = c(n.VIDEO_FRAMES, "Video frames received")
        dropped = c(n.VIDEO_DROPPED, "Video frames the avatar's stream lost")
        dup = c(n.VIDEO_DUPLICATED, "Video frames whose picture did not change")
        freezes = c(n.VIDEO_FREEZES, "Freezes (webrtc-stats freezeCount rule)")
        freeze_s = c(n.VIDEO_FREEZE_SECONDS, "Total freeze duration")
        pauses = c(n.VIDEO_PAUSES, "Pauses (no frame for over 5 s)")
        interval = HistogramMetricFamily(
            n.VIDEO_FRAME_INTERVAL, "Frame inter-arrival time", labels=rp
        )
        jitter = g(n.VIDEO_JITTER, "RFC 3550 jitter of frame arrivals")
        fps = g(n.VIDEO_FPS, "Frames per second over the last 5 s")
        hfps = g(n.VIDEO_HARMONIC_FPS, "Harmonic frame rate over the last 5 s")
        gap = c(n.AUDIO_GAP_SECONDS, "Received silence inside speech")
        concealed = c(n.AUDIO_CONCEALED_SAMPLES, "Audio samples concealed by the receiver")
        rtp_jitter = g(n.RTP_JITTER, "inbound-rtp jitter", ["kind"])
        rtp_lost = c(n.RTP_PACKETS_LOST, "inbound-rtp packets lost", ["kind"])
        jbd = g(n.JITTER_BUFFER_DELAY, "Average jitter buffer delay over the last poll", ["kind"])
        up = g(n.TRACK_UP, "1 while the avatar's track is subscribed and delivering", ["kind"])
        last = g(n.LAST_FRAME_TIMESTAMP, "Unix time of the last frame received", ["kind"])

        for a in st.avatars():
            lv = [a.room, a.participant]
            an = a.analyzer
            for m in METHODS:
                o = an.offsets[m]
                if o.offset_s is not None:
                    offset.add_metric(lv + [m], o.offset_s)
                    conf.add_metric(lv + [m], o.confidence)
                h = a.offset_abs[m]
                if h.sum or any(h.counts):
                    offset_abs.add_metric(lv + [m], h.cumulative(), h.sum)
            d = an.drift_estimate()
            if d is not None:
                drift.add_metric(lv, d.ms_per_min / 1000.0)
            v = an.video_stats()
            frames.add_metric(lv, v.frames)
            dropped.add_metric(lv, v.dropped)
            dup.add_metric(lv, v.duplicated)
            freezes.add_metric(lv, v.freezes)
            freeze_s.add_metric(lv, v.freeze_seconds)
            pauses.add_metric(lv, v.pauses)
            if any(a.frame_interval.counts):
                interval.add_metric(lv, a.frame_interval.cumulative(), a.frame_interval.sum)
            if v.frames > 1:
                jitter.add_metric(lv, v.jitter_s)
            if v.fps is not None:
                fps.add_metric(lv, v.fps)
            if v.harmonic_fps is not None:
                hfps.add_metric(lv, v.harmonic_fps)
            gap.add_metric(lv, an.audio.gap_seconds)
            for k in KINDS:
                up.add_metric(lv + [k], 1.0 if a.track_up[k] else 0.0)
                if k in a.last_frame_unix:
                    last.add_metric(lv + [k], a.last_frame_unix[k])
                s = a.rtp[k]
                if s.jitter_s is not None:
                    rtp_jitter.add_metric(lv + [k], s.jitter_s)
                if s.packets_lost is not None:
                    rtp_lost.add_metric(lv + [k], s.packets_lost)
                if s.jitter_buffer_delay_s is not None:
                    jbd.add_metric(lv + [k], s.jitter_buffer_delay_s)
            if a.rtp["audio"].concealed_samples is not None:
                concealed.add_metric(lv, a.rtp["audio"].concealed_samples)
        yield from (
            offset,
            conf,
            offset_abs,
            drift,
            frames,
            dropped,
            dup,
            freezes,
            freeze_s,
            pauses,
            interval,
            jitter,
            fps,
            hfps,
            gap,
            concealed,
            rtp_jitter,
            rtp_lost,
            jbd,
            up,
            last,
        )


def make_registry(state: MonitorState) -> CollectorRegistry:
    """A registry of its own holding the monitor's collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MonitorCollector(state))
    return reg
