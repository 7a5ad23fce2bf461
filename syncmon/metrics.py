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
    silent_concealed_samples: int | None = None
    concealment_events: int | None = None


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
    # input that failed validation, by what it was ("mark", "frame"): counted, never trusted
    malformed: dict[str, int] = field(default_factory=dict)

    # stream and stats tasks that died and were started again, by task
    task_restarts: dict[str, int] = field(default_factory=dict)

    def count_malformed(self, what: str) -> None:
        self.malformed[what] = self.malformed.get(what, 0) + 1

    def count_restart(self, task: str) -> None:
        self.task_restarts[task] = self.task_restarts.get(task, 0) + 1

    def observe_offset(self, method: str, offset_s: float) -> None:
        self.offset_abs[method].observe(abs(offset_s))

    def frame_arrived(self, kind: str) -> None:
        self.last_frame_unix[kind] = time.time()


@dataclass
class RoomState:
    connected: bool = False
    reconnects: int = 0
    task_restarts: int = 0  # the room's monitor failed unexpectedly and started over
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
        rep["malformed"] = dict(a.malformed)
        rep["task_restarts"] = dict(a.task_restarts)
        return rep


# a scrape retries an avatar whose state changed under it (worker jobs run in other threads)
COLLECT_TRIES = 3


class _Families:
    """The per-avatar metric families of one scrape."""

    def __init__(self, restarts: CounterMetricFamily) -> None:
        rp = [n.LABEL_ROOM, n.LABEL_PARTICIPANT]

        def g(name: str, doc: str, extra: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=rp + (extra or []))

        def c(name: str, doc: str, extra: list[str] | None = None) -> CounterMetricFamily:
            return CounterMetricFamily(name.removesuffix("_total"), doc, labels=rp + (extra or []))

        def h(name: str, doc: str, extra: list[str] | None = None) -> HistogramMetricFamily:
            return HistogramMetricFamily(name, doc, labels=rp + (extra or []))

        self.offset = g(n.AV_OFFSET, "Latest lip-sync offset t_video - t_audio", ["method"])
        self.conf = g(n.AV_OFFSET_CONFIDENCE, "Confidence of the latest estimate, 0..1", ["method"])
        self.offset_abs = h(n.AV_OFFSET_ABS, "|offset| per estimate", ["method"])
        self.drift = g(n.AV_DRIFT, "Slope of the lip-sync offset (seconds per minute)")
        self.frames = c(n.VIDEO_FRAMES, "Video frames received")
        self.dropped = c(n.VIDEO_DROPPED, "Video frames the avatar's stream lost")
        self.dup = c(n.VIDEO_DUPLICATED, "Video frames whose picture did not change")
        self.freezes = c(n.VIDEO_FREEZES, "Freezes (webrtc-stats freezeCount rule)")
        self.freeze_s = c(n.VIDEO_FREEZE_SECONDS, "Total freeze duration")
        self.pauses = c(n.VIDEO_PAUSES, "Pauses (no frame for over 5 s)")
        self.interval = h(n.VIDEO_FRAME_INTERVAL, "Frame inter-arrival time")
        self.jitter = g(n.VIDEO_JITTER, "RFC 3550 jitter of frame arrivals")
        self.fps = g(n.VIDEO_FPS, "Frames per second over the last 5 s")
        self.hfps = g(n.VIDEO_HARMONIC_FPS, "Harmonic frame rate over the last 5 s")
        self.gap = c(n.AUDIO_GAP_SECONDS, "Audio made up inside speech (non-silent concealment)")
        self.concealed = c(n.AUDIO_CONCEALED_SAMPLES, "Audio samples concealed by the receiver")
        self.still_s = c(n.LIP_STILL_SECONDS, "Speaking seconds with the mouth not moving")
        self.still_n = c(n.LIP_STILL_EPISODES, "Episodes of the mouth not moving while speaking")
        self.viewer_sync = g(
            n.VIEWER_SYNC, "1: viewers lip-sync audio and video (sync_streams); 0: as received"
        )
        self.rtp_jitter = g(n.RTP_JITTER, "inbound-rtp jitter", ["kind"])
        self.rtp_lost = c(n.RTP_PACKETS_LOST, "inbound-rtp packets lost", ["kind"])
        self.jbd = g(
            n.JITTER_BUFFER_DELAY, "Average jitter buffer delay over the last poll", ["kind"]
        )
        self.up = g(n.TRACK_UP, "1 while the avatar's track is subscribed and delivering", ["kind"])
        self.last = g(n.LAST_FRAME_TIMESTAMP, "Unix time of the last frame received", ["kind"])
        self.malformed = c(
            n.MALFORMED, "Input from the avatar that failed validation, by what", [n.LABEL_WHAT]
        )
        self.restarts = restarts  # one family with the rooms' own restarts

    def all(self) -> tuple[Metric, ...]:
        return tuple(v for v in vars(self).values() if isinstance(v, Metric))


Staged = list[tuple[Metric, tuple[object, ...]]]


def _avatar_samples(f: _Families, a: AvatarState) -> Staged:
    """Every sample of one avatar, staged: added to the families only once all were read."""
    out: Staged = []

    def add(fam: Metric, *args: object) -> None:
        out.append((fam, args))

    lv = [a.room, a.participant]
    an = a.analyzer
    for m in METHODS:
        o = an.offsets[m]
        if o.offset_s is not None:
            add(f.offset, lv + [m], o.offset_s)
            add(f.conf, lv + [m], o.confidence)
        hist = a.offset_abs[m]
        if hist.sum or any(hist.counts):
            add(f.offset_abs, lv + [m], hist.cumulative(), hist.sum)
    d = an.drift_estimate()
    if d is not None:
        add(f.drift, lv, d.ms_per_min / 1000.0)
    v = an.video_stats()
    add(f.frames, lv, v.frames)
    add(f.dropped, lv, v.dropped)
    add(f.dup, lv, v.duplicated)
    add(f.freezes, lv, v.freezes)
    add(f.freeze_s, lv, v.freeze_seconds)
    add(f.pauses, lv, v.pauses)
    if any(a.frame_interval.counts):
        add(f.interval, lv, a.frame_interval.cumulative(), a.frame_interval.sum)
    if v.frames > 1:
        add(f.jitter, lv, v.jitter_s)
    if v.fps is not None:
        add(f.fps, lv, v.fps)
    if v.harmonic_fps is not None:
        add(f.hfps, lv, v.harmonic_fps)
    add(f.gap, lv, an.audio.gap_seconds)
    if an.viewer_sync is not None:
        add(f.viewer_sync, lv, 1.0 if an.viewer_sync else 0.0)
    still = an.content.lip_still
    add(f.still_s, lv, still.seconds)
    add(f.still_n, lv, still.episodes)
    for k in KINDS:
        add(f.up, lv + [k], 1.0 if a.track_up[k] else 0.0)
        if k in a.last_frame_unix:
            add(f.last, lv + [k], a.last_frame_unix[k])
        s = a.rtp[k]
        if s.jitter_s is not None:
            add(f.rtp_jitter, lv + [k], s.jitter_s)
        if s.packets_lost is not None:
            add(f.rtp_lost, lv + [k], s.packets_lost)
        if s.jitter_buffer_delay_s is not None:
            add(f.jbd, lv + [k], s.jitter_buffer_delay_s)
    if a.rtp["audio"].concealed_samples is not None:
        add(f.concealed, lv, a.rtp["audio"].concealed_samples)
    for what, count in list(a.malformed.items()):
        add(f.malformed, lv + [what], count)
    for task, count in list(a.task_restarts.items()):
        add(f.restarts, lv + [task], count)
    return out


class MonitorCollector(Collector):
    """Renders a MonitorState as the metric families of shared/DESIGN.md.

    A scrape is complete or says it is not: each avatar's samples are read in full before any is
    added (a partly read avatar would show some series and miss others), an avatar whose state
    changed under the read is read again, and one that still fails is left out and counted in
    ``syncmon_collect_errors_total`` (the blackbox exporter's ``probe_success`` manner), which
    is always exported.
    """

    def __init__(self, state: MonitorState) -> None:
        self.state = state
        self.errors = 0

    def collect(self) -> Iterator[Metric]:
        st = self.state
        connected = GaugeMetricFamily(
            n.ROOM_CONNECTED, "1 while connected to the room", labels=[n.LABEL_ROOM]
        )
        reconnects = CounterMetricFamily(
            n.RECONNECTS.removesuffix("_total"), "Reconnections to the room", labels=[n.LABEL_ROOM]
        )
        restarts = CounterMetricFamily(
            n.TASK_RESTARTS.removesuffix("_total"),
            "Monitor tasks that died and were restarted",
            labels=[n.LABEL_ROOM, n.LABEL_PARTICIPANT, "task"],
        )
        for name, r in list(st.rooms.items()):
            connected.add_metric([name], 1.0 if r.connected else 0.0)
            reconnects.add_metric([name], r.reconnects)
            if r.task_restarts:
                restarts.add_metric([name, "", "room"], r.task_restarts)
        rejected = CounterMetricFamily(
            n.ROOMS_REJECTED.removesuffix("_total"),
            "Rooms not monitored because the cap was reached",
        )
        rejected.add_metric([], st.rooms_rejected)
        rooms = GaugeMetricFamily(n.ROOMS, "Rooms this process monitors now")
        rooms.add_metric([], len(st.rooms))
        cap = GaugeMetricFamily(n.ROOMS_MAX, "Rooms this process takes at most (--max-rooms)")
        cap.add_metric([], st.max_rooms)
        fams = _Families(restarts)
        for a in st.avatars():
            staged = self._read(fams, a)
            for fam, args in staged:
                fam.add_metric(*args)  # type: ignore[attr-defined]
        errors = CounterMetricFamily(
            n.COLLECT_ERRORS.removesuffix("_total"),
            "Avatars left out of a scrape because their state could not be read",
        )
        errors.add_metric([], self.errors)
        yield from (connected, reconnects, rejected, rooms, cap, *fams.all(), errors)

    def _read(self, fams: _Families, a: AvatarState) -> Staged:
        for attempt in range(COLLECT_TRIES):
            try:
                return _avatar_samples(fams, a)
            except Exception:
                if attempt == COLLECT_TRIES - 1:
                    self.errors += 1
                    log.exception("reading an avatar's state for a scrape failed")
        return []


def make_registry(state: MonitorState) -> CollectorRegistry:
    """A registry of its own holding the monitor's collector."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MonitorCollector(state))
    return reg
