"""What one monitor process watches, as live state: its rooms, their avatars, each avatar's
analyzer and counters, and the JSON report of them.

The live layer writes it (``live/room.py`` adds and removes rooms and avatars, ``live/avatar.py``
feeds analyzers and counts); ``/report`` and the Prometheus collector (``syncmon/metrics.py``)
read it. Worker jobs write from their own threads: readers iterate over snapshots (``list(...)``
of a dict's values), never over the live dicts.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .. import metric_names as n
from ..analysis.session import METHODS, SyncAnalyzer

KINDS = ("audio", "video")
TURN_PATHS = ("audio", "video")
RECENT_TURNS = 20  # responses and interruptions listed in /report
# a process whose monitors are this far behind a picture, or shed frames this recently, is
# overloaded: a worker then reports itself full to dispatch (the SyncmonMonitorBehind alert's
# own figures)
OVERLOAD_BACKLOG_S = 1.0
OVERLOAD_HOLD_S = 300.0


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

    # the monitor's lag behind the picture (seconds of the stream queued) when it last woke to
    # analyse it, or the most since if it has not caught up; the frames it shed when that lag
    # passed the limit
    backlog_s: float = 0.0
    frames_shed: int = 0
    last_shed_at: float | None = None  # monotonic
    # stream and stats tasks that died and were started again, by task
    task_restarts: dict[str, int] = field(default_factory=dict)
    # when the monitor saw the avatar join (monotonic; None: it was there before the monitor),
    # and from then to its first audio and first video frame received and its first picture
    # that moves with the speech (analysis.moving.moving_onset), by stage
    joined_at: float | None = None
    startup: dict[str, float] = field(default_factory=dict)
    # turns (analysis.turns), when the monitor follows the users' voices (--turns)
    turns: bool = False
    turn_response: dict[str, Buckets] = field(
        default_factory=lambda: {p: Buckets(n.TURN_RESPONSE_BUCKETS) for p in TURN_PATHS}
    )
    interruptions: int = 0
    interruption_stop: Buckets = field(default_factory=lambda: Buckets(n.INTERRUPTION_STOP_BUCKETS))
    # the last RECENT_TURNS of each: (unix time, seconds)
    recent_responses: dict[str, deque[tuple[float, float]]] = field(
        default_factory=lambda: {p: deque(maxlen=RECENT_TURNS) for p in TURN_PATHS}
    )
    recent_stops: deque[tuple[float, float | None]] = field(
        default_factory=lambda: deque(maxlen=RECENT_TURNS)
    )

    def first_frame(self, kind: str, t: float) -> None:
        """A frame of ``kind`` arrived at ``t`` (monotonic): the first one times its stage."""
        if self.joined_at is not None and kind not in self.startup:
            self.startup[kind] = max(0.0, t - self.joined_at)

    def count_malformed(self, what: str) -> None:
        self.malformed[what] = self.malformed.get(what, 0) + 1

    def count_restart(self, task: str) -> None:
        self.task_restarts[task] = self.task_restarts.get(task, 0) + 1

    def observe_offset(self, method: str, offset_s: float) -> None:
        self.offset_abs[method].observe(abs(offset_s))

    def response(self, path: str, seconds: float) -> None:
        self.turn_response[path].observe(seconds)
        self.recent_responses[path].append((time.time(), seconds))

    def interrupted(self, stop_s: float | None) -> None:
        """A user talked over the avatar; ``stop_s``: until it went quiet (None: it spoke on)."""
        self.interruptions += 1
        self.recent_stops.append((time.time(), stop_s))
        if stop_s is not None:
            self.interruption_stop.observe(stop_s)

    def frame_arrived(self, kind: str) -> None:
        self.last_frame_unix[kind] = time.time()


@dataclass
class RoomState:
    connected: bool = False
    reconnects: int = 0
    task_restarts: int = 0  # the room's monitor failed unexpectedly and started over
    user_restarts: int = 0  # a user's voice (--turns) failed to be followed and was again
    avatars: dict[str, AvatarState] = field(default_factory=dict)


class MonitorState:
    """All rooms one monitor process watches; what /metrics and /report render."""

    def __init__(self, *, max_rooms: int = 100) -> None:
        self.max_rooms = max_rooms
        self.rooms: dict[str, RoomState] = {}
        self.rooms_rejected = 0
        # a worker's parent (--processes N) holds no monitors: its children's overload, as
        # they last said
        self.overloaded_elsewhere = False

    def overloaded(self, now: float | None = None) -> bool:
        """Is a monitor of this process (or of its children) behind its picture by more than
        OVERLOAD_BACKLOG_S, or did one shed frames within OVERLOAD_HOLD_S?"""
        now = time.monotonic() if now is None else now
        return self.overloaded_elsewhere or any(
            a.backlog_s > OVERLOAD_BACKLOG_S
            or (a.last_shed_at is not None and now - a.last_shed_at < OVERLOAD_HOLD_S)
            for a in self.avatars()
        )

    def load(self) -> float:
        """What a worker reports to dispatch: its share of the room cap, or full (1) while it
        is overloaded -- the room cap says nothing of the CPU the rooms take."""
        share = len(self.rooms) / max(1, self.max_rooms)
        return max(share, 1.0) if self.overloaded() else share

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
        rep["startup_s"] = {k: round(v, 3) for k, v in a.startup.items()}
        if a.turns:
            rep["turns"] = {
                "responses": {p: sum(b.counts) for p, b in a.turn_response.items()},
                # the last RECENT_TURNS, oldest first: [unix time, seconds]
                "recent_response_s": {
                    p: [[round(t, 3), round(s, 4)] for t, s in list(d)]
                    for p, d in a.recent_responses.items()
                },
                "interruptions": a.interruptions,
                "recent_interruption_stop_s": [
                    [round(t, 3), None if s is None else round(s, 4)]
                    for t, s in list(a.recent_stops)
                ],
            }
        return rep
