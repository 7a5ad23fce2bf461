"""Per-``AvatarRunner`` bookkeeping: what the instrumentor's hooks feed and what OTel reads.

Media time within an utterance is the generator's own timeline: its first audio output of a
segment is t = 0, its video frames are 1/fps apart from the frame generated just before that
first audio (the generator emits a frame and then its audio, as bitHuman's runtime does). A frame
at media time t is compared, for processing time, with the moment the audio of t was pushed into
the generator and, for sender A/V skew, with the moment the audio of t left the audio source.

That moment comes from the source's send schedule (``_schedule.SendSchedule``): every capture
into the audio source is timed, and with the phase of the source's 10 ms timer each part of the
utterance's audio is placed on the tick that sent it -- including after the source ran dry
inside the utterance (a busy host), when the rest left later. The phase is learned on a tap on
the published track (``_leave.AudioLeaveTap``) from the first utterances, whose first audio is
measured there; then the tap closes. Where the schedule does not know (a capture that went in
while a tick fell, before the phase is known), the skew is not reported: the gauge is absent
rather than rough.

A timing mark is sent at mark points: the utterance's start and every ``MARK_EVERY_S`` of its
audio after it. Its leave is exact when every chunk up to the point's 400 ms came in time for
its tick; after or inside a chunk that did not, the mark says so (``exact: false``) and carries
the earliest leave: the monitor's offset does not depend on it, and the monitor itself refuses
audio that did not play out in one piece.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..marks import ENV_BLOCK_S, ENV_LEN_S, TOPIC, TimingMark, envelope
from ._schedule import TICK_S, SendSchedule

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram
    from opentelemetry.trace import Span, Tracer

    from ._leave import AudioLeaveTap

log = logging.getLogger(__name__)

MAX_PENDING_FRAMES = 256
MARK_WAIT_S = 2.0  # a mark point not resolved this long after its audio went out is given up
CALIBRATION_MARKS = 3  # leaves on the tap that agree with the timer's phase
PHASE_SPREAD_S = 0.002  # a leave on the tap this close to the timer's phase agrees with it
# the audio of a mark point must have left in one stretch for its envelope (and the match's
# smoothing past it)
CAPTURE_WINDOW_S = ENV_LEN_S + 0.02
MARK_EVERY_S = 0.5  # mark points: the utterance's start, then one per half second of it
MAX_OPEN_POINTS = 8
# this many of the last RISK_OF utterance starts not placed by the model (a busy host): the tap
# reopens (~3.5 % of a core while open) rather than most marks be lost
RISKY_STARTS, RISK_OF = 3, 5
SKEW_HOLD_S = 2.0  # points waiting for their frame, audio or schedule
# ended utterances whose spans wait for their last marks (the oldest ends first beyond this)
MAX_ENDING_SPANS = 4
ATTR_ROOM = "lk.room_name"
ATTR_IDENTITY = "lk.participant_identity"
ATTR_TRACK = "lk.track_sid"
ATTR_GENERATOR = "syncmon.generator"


@dataclass
class FrameInfo:
    out_t: float  # monotonic, when the generator yielded it
    frame_id: int = 0  # the generator's frame index: a frame lost downstream leaves a gap
    media_t: float | None = None  # within the utterance; None: idle frame
    processing_s: float | None = None
    point: MarkPoint | None = None  # the mark point whose picture this frame is
    seq: int = 0  # the utterance it belongs to (with media_t)


@dataclass
class InputSegment:
    """Audio pushed into the generator for one utterance: (media end, push time) per chunk."""

    ends: list[float] = field(default_factory=list)
    pushed_at: list[float] = field(default_factory=list)
    media_s: float = 0.0
    closed: bool = False

    def push_time(self, media_t: float) -> float | None:
        i = bisect.bisect_right(self.ends, media_t)
        return self.pushed_at[i] if i < len(self.pushed_at) else None


@dataclass(eq=False)
class MarkPoint:
    """A place in an utterance to be timed: its picture's frame and its audio's leave."""

    seq: int  # the utterance
    index: int  # 0: the utterance's start; k: k * MARK_EVERY_S into it
    offset: float  # media time of the point (a frame boundary)
    sched: SendSchedule  # the utterance's
    give_up: float  # sender clock
    template: np.ndarray | None = None  # envelope of its first ENV_LEN_S of audio
    frame_id: int | None = None
    s_v: float | None = None  # when its picture left (sender clock)
    estimate: float | None = None  # its audio's push time plus the queued duration


@dataclass(eq=False)
class UtteranceSpan:
    """An utterance's span. It ends (stamped with its utterance's end) once its utterance has
    ended and each of its mark points has been sent or given up: a mark resolved after the
    last of its audio went out is still an event of its own utterance. The runner's close ends
    every span still open."""

    span: Span
    seq: int
    skew_s: float | None = None  # its latest exact mark's sender skew
    end_ns: int | None = None  # when its utterance ended (None: still going out)


@dataclass
class Instruments:
    tracer: Tracer
    processing: Histogram
    skew: Histogram
    frames: Any  # Counter
    utterances: Any  # Counter
    first_frame: Histogram  # an utterance's audio into the avatar -> its first picture leaves
    frame_event_every: int
    clock: Callable[[], float]  # the sender clock stamped into FrameMetadata and marks
    timing_marks: bool


class RunnerTracker:
    """Everything the hooks learn about one runner, its generator and its sources."""

    def __init__(self, ins: Instruments, runner: Any) -> None:
        self.ins = ins
        self._runner = weakref.ref(runner)
        self.room = runner._room
        self.audio_source = runner._audio_source
        self.video_source = runner._video_source
        self.generator = runner._video_gen
        self.fps = float(runner._options.video_fps)
        self.track_sid: str | None = None
        self.extra_attrs: dict[str, Any] = {}
        # input side
        self._inputs: collections.deque[InputSegment] = collections.deque()
        # output side
        self._out_active = False
        self._out_frames = 0
        self._out_audio_s = 0.0
        self._leave_starts: list[float] = []
        self._leave_at: list[float] = []
        self._last_video: FrameInfo | None = None
        self._pending: collections.OrderedDict[int, FrameInfo] = collections.OrderedDict()
        self._span: UtteranceSpan | None = None  # the utterance going out
        self._ending: list[UtteranceSpan] = []  # ended, waiting for their last marks
        self._frames_in_span = 0
        self._proc_sum = 0.0
        self._proc_n = 0
        # timing marks: the utterance's number, audio (offset, mono samples) kept for the mark
        # points still to come, and the points waiting for their frame, audio or schedule
        self._mark_seq = 0
        self._mark_audio: list[tuple[float, np.ndarray]] = []
        self._mark_rate = 0
        self._points: list[MarkPoint] = []
        self._next_point = 0  # index of the next mark point of this utterance
        # the phase of the audio source's 10 ms timer (monotonic clock), learned on the tap
        self.tick_phase: float | None = None
        self._agree = 0  # utterances whose leave on the tap agrees with its timer's phase
        self._queued_at_first = 0.0
        # when this utterance's audio went into the source and left it
        self._sched = SendSchedule()
        # open until the timer's phase is known, and again while the model cannot place starts
        self.tap: AudioLeaveTap | None = None
        self.tap_track: Any = None  # the published audio track the tap subscribes to
        self.taps_opened = 0
        self._next_frame_id = 1
        self._background: set[asyncio.Future[None]] = set()
        self.marks_sent = 0
        # points whose utterance's first leave is not known (sent with the earliest, if known)
        self.marks_ambiguous = 0
        # points sent with the earliest leave (not exact): a chunk late for its tick inside
        # their 400 ms, or before them
        self.marks_underrun = 0
        self.marks_after_late = 0
        self.marks_unresolved = 0  # a point given up: its frame or audio never came
        self._risks: collections.deque[bool] = collections.deque(maxlen=RISK_OF)
        # the latest frame's skew, from its audio's leave on the schedule, and how uncertain
        # that leave is (0: known; a tick per chunk the schedule placed); None when there has
        # been no schedule for SKEW_HOLD_S (the gauge is then absent, not rough)
        self.last_skew_s: float | None = None
        self.last_skew_unc_s: float | None = None
        self._unknown_since: float | None = None  # sender clock
        # the utterance's audio first pushed into the generator (monotonic), and whether its
        # first picture has left yet
        self._audio_in_t: float | None = None
        self._first_sent = False

    @property
    def av_sync(self) -> Any:
        runner = self._runner()
        return None if runner is None else runner._av_sync

    # -- attributes ------------------------------------------------------------------------
    def attributes(self) -> dict[str, Any]:
        a: dict[str, Any] = {ATTR_GENERATOR: type(self.generator).__name__}
        try:
            a[ATTR_ROOM] = self.room.name
            if self.room.isconnected():
                a[ATTR_IDENTITY] = self.room.local_participant.identity
        except Exception:  # not connected yet
            pass
        if self.track_sid:
            a[ATTR_TRACK] = self.track_sid
        a.update(self.extra_attrs)
        return a

    # -- queues (read by observable gauges) ------------------------------------------------
    def audio_backlog_s(self) -> float:
        """Audio pushed into the generator that has not come out of it yet."""
        pushed = sum(s.media_s for s in self._inputs)
        return max(0.0, pushed - (self._out_audio_s if self._out_active else 0.0))

    def sync_video_queue(self) -> int:
        sync = self.av_sync
        return 0 if sync is None else int(sync._video_queue.qsize())

    def audio_source_queued_s(self) -> float:
        return float(self.audio_source.queued_duration)

    def runtime_queues(self) -> dict[str, tuple[int, int]]:
        """The generator's own queues: name -> (depth, capacity)."""
        probe = getattr(self.generator, "syncmon_queues", None)
        if callable(probe):
            return dict(probe())
        runtime = getattr(self.generator, "_runtime", None)  # bitHuman's AsyncBithuman
        out: dict[str, tuple[int, int]] = {}
        for name, attr in (("input", "_in_queue"), ("output", "_out_queue")):
            q = getattr(runtime, attr, None)
            if q is not None and hasattr(q, "qsize"):
                out[name] = (int(q.qsize()), int(getattr(q, "maxsize", 0)))
        return out

    # -- hooks -----------------------------------------------------------------------------
    def on_push_audio(self, frame: Any, is_end: bool) -> None:
        if is_end:
            if self._inputs and not self._inputs[-1].closed:
                self._inputs[-1].closed = True
            return
        if not self._inputs or self._inputs[-1].closed:
            self._inputs.append(InputSegment())
            while len(self._inputs) > 8:  # an output that never ends its segments
                self._inputs.popleft()
        seg = self._inputs[-1]
        seg.media_s += float(frame.duration)
        seg.ends.append(seg.media_s)
        seg.pushed_at.append(time.monotonic())

    def on_output(self, item: Any, kind: str) -> None:
        now = time.monotonic()
        if kind == "video":
            info = FrameInfo(out_t=now, frame_id=self._next_frame_id)
            self._next_frame_id += 1
            if self._out_active:
                info.media_t = self._out_frames / self.fps
                info.seq = self._mark_seq
                if self._out_frames == self._point_frame(self._next_point):
                    info.point = self._add_point(info.media_t)
                if self._out_frames == 0:
                    self._event("avatar.first_frame_generated", now)
                self._out_frames += 1
                self._processing(info)
            self._pending[id(item)] = info
            while len(self._pending) > MAX_PENDING_FRAMES:
                self._pending.popitem(last=False)
            self._last_video = info
            self.ins.frames.add(1, self.attributes())
            if self._ending:  # (an idle avatar sends no audio: its frames run the give-ups)
                self._resolve_points(ended_only=True)
        elif kind == "audio":
            if not self._out_active:
                self._start_utterance(now)
            queued = self.audio_source_queued_s()
            self._leave_starts.append(self._out_audio_s)
            self._leave_at.append(self.ins.clock() + queued)
            self._collect_mark_audio(item)
            self._out_audio_s += float(item.duration)
            self._resolve_points()
        else:
            self._end_utterance()

    def wants_capture_timing(self) -> bool:
        """Is the next capture into the audio source part of an utterance (timed)?"""
        return self._out_active and self.ins.timing_marks

    def on_audio_capture(self, frame: Any, t_call: float, t_done: float) -> None:
        """The utterance's audio went into the audio source between ``t_call`` and
        ``t_done`` (monotonic)."""
        if not self._out_active:
            return
        self._sched.add(float(frame.duration), t_call, t_done)
        self._resolve_points()

    def on_capture(self, frame: Any, metadata: Any) -> tuple[int, float]:
        """A frame leaves through the video source: its FrameMetadata id and sender time."""
        s_v = self.ins.clock()
        info = self._pending.pop(id(frame), None)
        if metadata is not None and metadata.HasField("frame_id"):
            frame_id = int(metadata.frame_id)
        elif info is not None:
            frame_id = info.frame_id
        else:  # a frame that did not come out of the generator
            frame_id = self._next_frame_id
            self._next_frame_id += 1
        if info is not None and info.point is not None:
            info.point.frame_id, info.point.s_v = frame_id, s_v
        if (
            info is not None
            and info.media_t is not None
            and info.seq == self._mark_seq
            and not self._first_sent
        ):
            self._first_sent = True
            now = time.monotonic()
            self._event("avatar.first_frame_sent", now, {"syncmon.frame_id": frame_id})
            if self._audio_in_t is not None:
                self.ins.first_frame.record(now - self._audio_in_t, self.attributes())
        if info is not None and info.media_t is not None:
            s_a, unc = self._audio_leave(info.media_t)
            if s_a is not None:
                skew = s_v - s_a
                # the gauge takes the schedule's leave, known or placed (with its uncertainty
                # beside it), the histogram only a known one. Without a schedule (the
                # utterance's start still being measured on the tap) the gauge keeps the last
                # one for a while, then is absent: the push time is off by up to a tick and
                # the queue's rounding
                if unc is not None:
                    self.last_skew_s, self.last_skew_unc_s = skew, unc
                    self._unknown_since = None
                    if unc == 0.0:
                        self.ins.skew.record(abs(skew), self.attributes())
                elif self._unknown_since is None:
                    self._unknown_since = s_v
                elif s_v - self._unknown_since > SKEW_HOLD_S:
                    self.last_skew_s = self.last_skew_unc_s = None
                self._frame_event(frame_id, info, skew)
        self._resolve_points()
        return frame_id, s_v

    # -- internals -------------------------------------------------------------------------
    def _processing(self, info: FrameInfo) -> None:
        seg = self._inputs[0] if self._inputs else None
        if seg is None or info.media_t is None:
            return
        pushed = seg.push_time(info.media_t)
        if pushed is None:
            return
        info.processing_s = info.out_t - pushed
        self._proc_sum += info.processing_s
        self._proc_n += 1
        self.ins.processing.record(info.processing_s, self.attributes())

    def _audio_leave(self, media_t: float) -> tuple[float | None, float | None]:
        """When the audio of ``media_t`` (this utterance) left the source, sender clock, and
        how uncertain that is (s: 0 known, ``SendSchedule.estimate``; None: no schedule, the
        push-time estimate; (None, None) if it has not come out yet)."""
        i = bisect.bisect_right(self._leave_starts, media_t) - 1
        if i < 0 or (i == len(self._leave_starts) - 1 and media_t >= self._out_audio_s):
            return None, None  # its audio has not come out yet
        est = self._sched.estimate(media_t)
        if est is not None:
            return self._sender_time(est[0]), est[1]
        return self._leave_at[i] + media_t - self._leave_starts[i], None

    def _start_utterance(self, now: float) -> None:
        self._out_active = True
        self._out_audio_s = 0.0
        self._leave_starts.clear()
        self._leave_at.clear()
        self._out_frames = 0
        self._mark_seq += 1
        self._first_sent = False
        seg = self._inputs[0] if self._inputs else None
        self._audio_in_t = seg.pushed_at[0] if seg is not None and seg.pushed_at else None
        # the span opens where the utterance's audio went into the avatar: its events then
        # split a slow turn into the avatar's share (audio in -> first picture generated ->
        # first picture sent) and what came before and after
        attrs = self.attributes()
        attrs["syncmon.utterance"] = self._mark_seq
        start = _wall_ns(now if self._audio_in_t is None else min(now, self._audio_in_t))
        span = self.ins.tracer.start_span("avatar.utterance", attributes=attrs, start_time=start)
        self._span = UtteranceSpan(span, self._mark_seq)
        if self._audio_in_t is not None:
            span.add_event("avatar.audio_in", {}, timestamp=start)
        self._queued_at_first = self.audio_source_queued_s()
        self._sched = SendSchedule(self.tick_phase, self._queued_at_first)
        self._mark_audio = []
        self._next_point = 0
        last = self._last_video
        if last is not None and last.media_t is None and now - last.out_t < 1.5 / self.fps:
            # the frame generated with this audio: media time 0, the first mark point's picture
            last.media_t = 0.0
            last.seq = self._mark_seq
            last.point = self._add_point(0.0)
            self._out_frames = 1
            self._event("avatar.first_frame_generated", last.out_t)
            self._processing(last)
        else:
            self._next_point = 1  # no picture of the start: the first point is a second in
        self._frames_in_span = 0
        self._proc_sum, self._proc_n = 0.0, 0
        log.debug("utterance %d started", self._mark_seq)
        self.ins.utterances.add(1, self.attributes())

    def _point_frame(self, index: int) -> int:
        """The frame (within the utterance) that is mark point ``index``'s picture."""
        return int(round(index * MARK_EVERY_S * self.fps))

    def _add_point(self, offset: float) -> MarkPoint | None:
        index = self._next_point
        self._next_point += 1
        if not self.ins.timing_marks:
            return None
        if len(self._points) >= MAX_OPEN_POINTS:
            self._drop_point(self._points[0], "too many points waiting")
            self.marks_unresolved += 1
        point = MarkPoint(
            self._mark_seq,
            index,
            offset,
            self._sched,
            self.ins.clock() + ENV_LEN_S + MARK_WAIT_S,
        )
        self._points.append(point)
        return point

    def _collect_mark_audio(self, frame: Any) -> None:
        """Keep the utterance's audio from the next mark point's on, and give each point the
        envelope of its first ENV_LEN_S once it has come out."""
        if not self.ins.timing_marks:
            return
        x = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            x = x.reshape(-1, frame.num_channels).mean(axis=1)
        self._mark_rate = int(frame.sample_rate)
        self._mark_audio.append((self._out_audio_s, x.astype(np.float32) / 32768.0))
        end = self._out_audio_s + float(frame.duration)
        for p in self._points:
            if p.template is None and p.seq == self._mark_seq and end >= p.offset + ENV_LEN_S:
                p.template = self._template(p.offset)
                i = bisect.bisect_right(self._leave_starts, p.offset) - 1
                p.estimate = self._leave_at[i] + p.offset - self._leave_starts[i]
        # audio before every point still to fill is not needed any more
        keep_from = min(
            [p.offset for p in self._points if p.template is None and p.seq == self._mark_seq]
            + [self._point_frame(self._next_point) / self.fps]
        )
        rate = self._mark_rate
        while self._mark_audio and (
            self._mark_audio[0][0] + self._mark_audio[0][1].size / rate <= keep_from
        ):
            self._mark_audio.pop(0)

    def _template(self, offset: float) -> np.ndarray:
        rate = self._mark_rate
        t0 = self._mark_audio[0][0]
        x = np.concatenate([a for _, a in self._mark_audio])
        i = int(round((offset - t0) * rate))
        n = int(round(ENV_LEN_S / ENV_BLOCK_S))
        env = envelope(x[max(0, i) : i + int(round(ENV_LEN_S * rate))], rate)
        return env[:n]

    def _resolve_points(self, ended_only: bool = False) -> None:
        """Called as audio, captures and frames go out: which mark points can be sent now?
        (``ended_only``: those of ended utterances; the one going out waits for its captures,
        which place its audio on the source's ticks.)"""
        for p in list(self._points):
            if ended_only and p.seq == self._mark_seq and self._out_active:
                continue
            try:
                self._resolve(p)
            except Exception as e:  # one point's failure never stops the others
                self._drop_point(p, f"failed: {e}")
                self.marks_unresolved += 1
        if self._ending:
            self._end_spans()

    def _resolve(self, p: MarkPoint) -> None:
        now = self.ins.clock()
        if p.template is None or p.s_v is None or p.frame_id is None or p.estimate is None:
            if now > p.give_up:
                self._drop_point(p, "its picture or audio never went out")
                self.marks_unresolved += 1
            return
        sched = p.sched
        if p.index == 0 and self.tap is not None and sched.measured_base is None:
            res = self.tap.find(p.template, p.estimate - self._sender_time(0.0))
            if isinstance(res, tuple):
                self._calibrate(res[0], sched)
            elif res is None and now <= p.give_up:
                return  # its audio has not all come through the tap yet
            else:
                log.debug("utterance %d not found in the audio tap", p.seq)
        if sched.base is None:
            if self.tap is None and self.tick_phase is None and p.index == 0:
                # no tap (turned off, or the room went away before it): the estimate
                self._send(p, p.estimate, exact=False)
            elif self.tap is not None and p.index > 0 and now <= p.give_up:
                return  # the start may still be measured on the tap
            else:
                # a tick fell while the utterance's first chunk went in: which one took it
                # is not known (see below: the mark goes out with the earliest leave)
                self.marks_ambiguous += 1
                self._placed(p, False)
                earliest = sched.earliest(p.offset)
                if earliest is None:
                    self._drop_point(p, "not even the earliest its audio left is known")
                else:
                    self._send(p, self._sender_time(earliest), exact=False)
            return
        end = p.offset + CAPTURE_WINDOW_S
        if p.seq != self._mark_seq or not self._out_active:
            end = min(end, sched.captured_s)  # (the utterance ended: all of it went in)
        whole = sched.in_time(p.offset, end)
        if whole is None:
            if now > p.give_up:
                self._drop_point(p, "its audio never all went into the source")
                self.marks_unresolved += 1
            return
        self._placed(p, True)
        left = sched.leave(p.offset) if whole else None
        if left is not None:
            self._send(p, self._sender_time(left))
            return
        # when, exactly, this audio left is not known: a chunk came in late for its tick,
        # before or inside it -- the source may have run dry (what follows left a tick or more
        # later) or its timer's task may have run late and taken it after all. The monitor's
        # offset does not need the leave: it is the received picture of the point's frame
        # minus the received point's audio (the leave cancels between the two transits), and
        # the monitor withholds a match whose audio did not play out in one piece (a gap inside
        # the 400 ms puts its halves apart). So the mark goes out, saying so, with the earliest
        # the audio can have left: the sender's skew is then an upper bound, whole ticks above
        # the true one. (Dropping such points left a busy host's long utterances unmeasured,
        # and every point after a stall inside an utterance, just where its offset changed.)
        if not whole:
            late = sched.first_late(p.offset, end)
            log.debug(
                "utterance %d, mark point %d: the audio source may have run dry inside it%s: "
                "sent with the earliest leave",
                p.seq,
                p.index,
                ""
                if late is None
                else f" (the chunk at {late[0]:.2f} s came in {1e3 * late[1]:+.1f} ms from its "
                "tick)",
            )
            self.marks_underrun += 1
        else:
            self.marks_after_late += 1
        earliest = sched.earliest(p.offset)
        assert earliest is not None
        self._send(p, self._sender_time(earliest), exact=False)

    def _drop_point(self, p: MarkPoint, why: str) -> None:
        log.debug("utterance %d, mark point %d: %s, no timing mark", p.seq, p.index, why)
        self._points.remove(p)

    def _sender_time(self, t_mono: float) -> float:
        return t_mono + (self.ins.clock() - time.monotonic())

    def _calibrate(self, s_a: float, sched: SendSchedule) -> None:
        """The utterance's start measured on the tap (monotonic clock) sets its schedule's
        base; once the tap knows the phase of the source's timer and three utterances in a row
        agree with the model, the tap closes and schedules are modelled from the captures."""
        assert self.tap is not None
        phase = self.tap.timer_phase()
        if phase is None:
            phase = self.tick_phase  # (the tap reopened: its own estimate comes later)
        if phase is None:
            hits = self.tap.phase_hits
            log.debug(
                "audio source timer: no phase yet (%d chunks%s)",
                self.tap.chunks,
                "" if hits is None else f"; {100 * hits:.0f} % of them near the likeliest",
            )
            sched.set_base(s_a)
            return
        # an utterance starts on a tick (its audio goes in whole 10 ms blocks)
        snapped = phase + TICK_S * round((s_a - phase) / TICK_S)
        if abs(snapped - s_a) > PHASE_SPREAD_S:
            # the tap's own reading came late (a busy loop): the schedule, from the phase
            log.debug("audio tap reading %.1f ms off the timer's phase", 1e3 * (s_a - snapped))
            sched.set_phase(phase)
            self._agree = 0
            return
        sched.set_base(snapped)
        model = sched.modelled_base(phase)
        if model is not None and abs(model - snapped) < PHASE_SPREAD_S / 2:
            self._agree += 1
        else:
            log.debug(
                "audio tap: the utterance left %s",
                "with a tick falling as it went in"
                if model is None
                else f"{1e3 * (snapped - model):+.1f} ms from its modelled leave",
            )
            self._agree = 0
        if self._agree >= CALIBRATION_MARKS:
            self.tick_phase = phase
            log.debug("audio source timer phase %.2f ms: the tap closes", 1000 * phase)
            if self._sched.phase is None:
                self._sched.set_phase(phase)
            self._close_tap()

    def _placed(self, p: MarkPoint, placed: bool) -> None:
        """Whether the model placed an utterance's start (the tap closed): when it could not
        for RISKY_STARTS of the last RISK_OF (a busy host: captures across ticks), the tap
        reopens and measures the starts until the model agrees again."""
        if p.index != 0 or self.tap is not None or self.tick_phase is None:
            return
        self._risks.append(not placed)
        if sum(self._risks) >= RISKY_STARTS:
            log.debug("utterance starts not placed by the model: the audio tap reopens")
            self._risks.clear()
            self._agree = 0
            self._open_tap()

    def _send(self, p: MarkPoint, s_a: float, exact: bool = True) -> None:
        self._points.remove(p)
        assert p.template is not None and p.frame_id is not None and p.s_v is not None
        skew = p.s_v - s_a
        log.debug(
            "utterance %d: timing mark at %.3f s, skew %s%.2f ms",
            p.seq,
            p.offset,
            "" if exact else "<= ",
            1e3 * skew,
        )
        us = self._span_of(p.seq)
        if us is not None:
            if exact:
                us.skew_s = skew
            us.span.add_event(
                "avatar.timing_mark",
                {
                    "syncmon.media_time_ms": round(1000.0 * p.offset, 1),
                    "syncmon.frame_id": p.frame_id,
                    "syncmon.sender_av_skew_ms": 1000.0 * skew,
                    "syncmon.leave_exact": exact,
                },
            )
        mark = TimingMark(
            seq=p.seq,
            t_audio_us=int(round(s_a * 1e6)),
            skew_us=int(round(skew * 1e6)),
            frame_id=p.frame_id,
            env=tuple(float(v) for v in p.template),
            exact=exact,
        )

        async def send() -> None:
            try:
                await self.room.local_participant.publish_data(
                    mark.encode(), reliable=True, topic=TOPIC
                )
                self.marks_sent += 1
            except Exception as e:  # a mark lost costs one estimate, never the avatar
                log.debug("timing mark not sent: %s", e)

        self._keep(asyncio.get_running_loop().create_task(send()), "sending a timing mark")

    def _end_utterance(self) -> None:
        if self._inputs:
            self._inputs.popleft()
        if not self._out_active:
            return
        self._out_active = False
        # its audio is all out: a point without ENV_LEN_S of audio after it is not one
        self._points = [p for p in self._points if p.template is not None]
        self._mark_audio = []
        self._resolve_points()
        log.debug("utterance %d ended: %.3f s of audio", self._mark_seq, self._out_audio_s)
        us, self._span = self._span, None
        if us is not None:
            us.end_ns = time.time_ns()
            us.span.set_attribute("syncmon.frames", self._out_frames)
            us.span.set_attribute("syncmon.audio_seconds", round(self._out_audio_s, 4))
            if self._proc_n:
                us.span.set_attribute(
                    "syncmon.processing_time_ms_mean", 1000.0 * self._proc_sum / self._proc_n
                )
            self._ending.append(us)
            self._end_spans()

    def _end_spans(self, closing: bool = False) -> None:
        """End the ended utterances' spans that wait for no mark (all of them when closing,
        the oldest beyond MAX_ENDING_SPANS)."""
        waiting = {p.seq for p in self._points}
        keep = [u for u in self._ending if not closing and u.seq in waiting]
        for us in [u for u in self._ending if u not in keep] + keep[:-MAX_ENDING_SPANS]:
            if us.skew_s is not None:
                us.span.set_attribute("syncmon.sender_av_skew_ms", 1000.0 * us.skew_s)
            us.span.end(end_time=us.end_ns)
        self._ending = keep[-MAX_ENDING_SPANS:]

    async def aclose(self) -> None:
        """The runner closed: the utterance going out ends here (``syncmon.runner_closed``),
        every span still waiting for marks ends with the marks it has, and the tap closes."""
        if self._span is not None:
            self._span.span.set_attribute("syncmon.runner_closed", True)
            self._end_utterance()
        self._end_spans(closing=True)
        tap, self.tap = self.tap, None
        if tap is not None:
            await tap.aclose()

    def _span_of(self, seq: int) -> UtteranceSpan | None:
        """Utterance ``seq``'s span, if it is still open."""
        open_ = [self._span, *self._ending] if self._span is not None else self._ending
        return next((u for u in open_ if u.seq == seq), None)

    def _event(self, name: str, t_mono: float, attrs: dict[str, Any] | None = None) -> None:
        """An event on the utterance's span at ``t_mono`` (monotonic)."""
        if self._span is not None:
            self._span.span.add_event(name, attrs or {}, timestamp=_wall_ns(t_mono))

    def _frame_event(self, frame_id: int, info: FrameInfo, skew: float) -> None:
        self._frames_in_span += 1
        us = self._span_of(info.seq)  # (a late picture leaves after its utterance ended)
        if us is None or (self._frames_in_span - 1) % self.ins.frame_event_every:
            return
        span = us.span
        attrs: dict[str, Any] = {
            "syncmon.frame_id": frame_id,
            "syncmon.media_time_ms": round(1000.0 * (info.media_t or 0.0), 1),
            "syncmon.sender_av_skew_ms": round(1000.0 * skew, 2),
            "syncmon.sync_video_queue_frames": self.sync_video_queue(),
            "syncmon.audio_source_queued_ms": round(1000.0 * self.audio_source_queued_s(), 1),
        }
        if info.processing_s is not None:
            attrs["syncmon.processing_time_ms"] = round(1000.0 * info.processing_s, 2)
        span.add_event("avatar.frame", attrs)

    def attach_audio_track(self, track: Any) -> None:
        """The runner's published audio track: the first utterances' audio is timed on it."""
        self.tap_track = track
        self._open_tap()

        def closed(*_: Any) -> None:
            self._close_tap()

        self.room.on("disconnected", closed)

    def _open_tap(self) -> None:
        from ._leave import AudioLeaveTap

        self._close_tap()
        if self.tap_track is None or not self.ins.timing_marks:
            return
        # the source's timer runs on the monotonic clock: so does the tap, and the phase learned
        # on it (a wall clock that NTP slews would walk away from it)
        tap = AudioLeaveTap(self.tap_track, time.monotonic)
        tap.on_audio(self._resolve_points)
        tap.start()
        self.tap = tap
        self.taps_opened += 1

    def _close_tap(self) -> None:
        tap, self.tap = self.tap, None
        if tap is not None:
            self._keep(asyncio.ensure_future(tap.aclose()), "closing the audio tap")

    def _keep(self, task: asyncio.Future[None], what: str) -> None:
        """Hold a background task until it ends (an unreferenced one can be collected mid-run)
        and log its failure with the reason."""
        self._background.add(task)

        def done(t: asyncio.Future[None]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("%s failed: %s", what, t.exception())

        task.add_done_callback(done)


def _wall_ns(t_mono: float) -> int:
    """A monotonic time as the wall clock's nanoseconds OpenTelemetry stamps with."""
    return time.time_ns() - int((time.monotonic() - t_mono) * 1e9)
