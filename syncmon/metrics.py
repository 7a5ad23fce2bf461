"""Prometheus exposition of the monitor's state (``live/state.py``).

A custom collector renders the current state at scrape time (the blackbox/node exporter
manner): nothing is registered at import, each monitor owns its registry, the series of a room
disappear with the room, and a value that is unknown is absent rather than a made-up zero.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import metric_names as n
from .analysis.session import METHODS
from .live.state import KINDS, AvatarState, MonitorState

log = logging.getLogger(__name__)
# a scrape retries an avatar whose state changed under it (worker jobs run in other threads)
COLLECT_TRIES = 3


def overloaded_family(st: MonitorState) -> GaugeMetricFamily:
    """syncmon_overloaded for the process (a worker's parent: for its children)."""
    over = GaugeMetricFamily(
        n.OVERLOADED,
        "1 while a monitor is over 1 s behind its picture or shed frames within 5 minutes "
        "(a worker then reports itself full and refuses rooms)",
    )
    over.add_metric([], 1.0 if st.overloaded() else 0.0)
    return over


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
        self.face_frames = c(
            n.FACE_FRAMES,
            "Video frames in which the avatar's face was found and tracked (where it is not, "
            "lip-still is judged on the voice's correlation alone)",
        )
        self.face_errors = c(
            n.FACE_ERRORS, "Face detections and mouth measurements on the face that failed"
        )
        self.windows = c(
            n.CONTENT_WINDOWS,
            "Content estimator windows by result: measured (an offset published), unmeasured "
            "(the voice spoke and no offset came: the content offset is blind there), no_speech",
            ["result"],
        )
        self.startup = g(
            n.AVATAR_STARTUP,
            "From the avatar joining to its first sound (audio), first picture (video) and "
            "first picture that moves with the speech (moving)",
            ["stage"],
        )
        self.response = h(
            n.TURN_RESPONSE,
            "A user's end of speech to the avatar's voice (audio) or mouth (video)",
            [n.LABEL_PATH],
        )
        self.interruptions = c(n.INTERRUPTIONS, "A user talked over the avatar")
        self.interruption_stop = h(
            n.INTERRUPTION_STOP, "A user talking over the avatar to the avatar going quiet"
        )
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
        self.backlog = g(
            n.MONITOR_BACKLOG,
            "The monitor's lag behind the avatar's picture: seconds of it received and not yet "
            "analysed (its host is short of CPU when this grows)",
        )
        self.shed = c(
            n.MONITOR_FRAMES_SHED,
            "Frames the monitor received and did not analyse, to catch up with the picture "
            "(its host is short of CPU; never counted as the avatar's drops)",
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
    snap = a.analyzer.snapshot()
    for m in METHODS:
        o = snap.offsets[m]
        if o.offset_s is not None:
            add(f.offset, lv + [m], o.offset_s)
            add(f.conf, lv + [m], o.confidence)
        hist = a.offset_abs[m]
        if hist.sum or any(hist.counts):
            add(f.offset_abs, lv + [m], hist.cumulative(), hist.sum)
    if snap.drift_s_per_min is not None:
        add(f.drift, lv, snap.drift_s_per_min)
    v = snap.video
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
    add(f.gap, lv, snap.audio_gap_s)
    if snap.viewer_sync is not None:
        add(f.viewer_sync, lv, 1.0 if snap.viewer_sync else 0.0)
    add(f.still_s, lv, snap.lip_still_s)
    add(f.still_n, lv, snap.lip_still_episodes)
    if snap.face_frames is not None:
        add(f.face_frames, lv, snap.face_frames)
        add(f.face_errors, lv, snap.face_errors)
    for result, count in snap.content_windows.items():
        add(f.windows, lv + [result], count)
    for stage, seconds in list(a.startup.items()):
        add(f.startup, lv + [stage], seconds)
    for path, hist in list(a.turn_response.items()):
        if any(hist.counts):
            add(f.response, lv + [path], hist.cumulative(), hist.sum)
    if a.turns:
        add(f.interruptions, lv, a.interruptions)
        add(f.interruption_stop, lv, a.interruption_stop.cumulative(), a.interruption_stop.sum)
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
    add(f.backlog, lv, a.backlog_s)
    add(f.shed, lv, a.frames_shed)
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
            if r.user_restarts:
                restarts.add_metric([name, "", "user_audio"], r.user_restarts)
        rejected = CounterMetricFamily(
            n.ROOMS_REJECTED.removesuffix("_total"),
            "Rooms not monitored because the cap was reached or the worker was overloaded",
        )
        rejected.add_metric([], st.rooms_rejected)
        rooms = GaugeMetricFamily(n.ROOMS, "Rooms this process monitors now")
        rooms.add_metric([], len(st.rooms))
        cap = GaugeMetricFamily(n.ROOMS_MAX, "Rooms this process takes at most (--max-rooms)")
        cap.add_metric([], st.max_rooms)
        over = overloaded_family(st)
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
        yield from (connected, reconnects, rejected, rooms, cap, over, *fams.all(), errors)

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
