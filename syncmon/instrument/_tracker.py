"""Per-``AvatarRunner`` bookkeeping: what the instrumentor's hooks feed and what OTel reads.

Media time within an utterance is the generator's own timeline: its first audio output of a
segment is t = 0, its video frames are 1/fps apart from the frame generated just before that
first audio (the generator emits a frame and then its audio, as bitHuman's runtime does). A frame
at media time t is compared, for processing time, with the moment the audio of t was pushed into
the generator and, for sender A/V skew, with the moment the audio of t leaves the audio source.

That moment is estimated (push time plus the source's queued duration), then set exactly for the
utterance's first audio: measured on a tap on the published track (``_leave.AudioLeaveTap``)
while the phase of the source's 10 ms timer is being learned, modelled from that phase and the
capture afterwards. The utterance's audio leaves from there one sample per sample period, as
long as the estimate does not fall behind that (the source ran dry: the estimate is used again).
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

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram
    from opentelemetry.trace import Span, Tracer

    from ._leave import AudioLeaveTap

log = logging.getLogger(__name__)

MAX_PENDING_FRAMES = 256
MARK_WAIT_S = 2.0  # a mark whose audio the tap has not shown by then goes with the estimate
TICK_S = 0.01  # livekit's audio source hands 10 ms to WebRTC per tick of its native timer
CALIBRATION_MARKS = 3  # leaves on the tap that agree with the timer's phase
PHASE_SPREAD_S = 0.002  # a leave on the tap this close to the timer's phase agrees with it
UNDERRUN_S = 0.015  # the estimated leave this much after the measured one: the source ran dry
# an utterance's captures into the audio source are timed while its audio is within the
# mark's envelope (and the match's smoothing past it)
CAPTURE_WINDOW_S = ENV_LEN_S + 0.02
# a capture confirmed later than this before the tick that sends its first block may have
# missed that tick: the source then ran dry and sent the rest of the utterance one tick late
# (confirmed before the tick, it was in time; the margin covers the phase's own error)
CAPTURE_GUARD_S = 0.0003
# this many of the last RISK_OF utterances at risk: the machine is loaded, measure on the tap
# (which costs ~3.5 % of a core while open) rather than drop most marks
RISKY_MARKS, RISK_OF = 3, 5
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
    anchor: bool = False


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


@dataclass
class PendingMark:
    """A timing mark whose audio leave time is still being measured."""

    seq: int
    template: np.ndarray
    estimate: float  # push time plus the source's queued duration
    frame_id: int
    s_v: float
    modelled: float | None = None  # from the source timer's phase, once calibrated
    modelled_mono: float | None = None  # the same on the monotonic clock
    give_up: float = 0.0


@dataclass
class Instruments:
    tracer: Tracer
    processing: Histogram
    skew: Histogram
    frames: Any  # Counter
    utterances: Any  # Counter
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
        self._span: Span | None = None
        self._frames_in_span = 0
        self._proc_sum = 0.0
        self._proc_n = 0
        # timing mark of the current utterance
        self._mark_seq = 0
        self._mark_env: list[np.ndarray] = []
        self._mark_env_s = 0.0
        self._mark_rate = 0
        self._mark_anchor: tuple[int, float] | None = None  # frame_id, S_v
        self._mark_sent = True
        self._mark_wait: PendingMark | None = None  # a mark waiting for the tap
        # the phase of the audio source's 10 ms timer (monotonic clock), learned on the tap
        self.tick_phase: float | None = None
        self._agree = 0  # utterances whose leave on the tap agrees with its timer's phase
        self._leave0: float | None = None  # measured leave of this utterance's first audio
        # this utterance's first capture into the audio source: call, return (monotonic), queued
        self._first_capture: tuple[float, float, float] | None = None
        self._queued_at_first = 0.0
        # (offset in the utterance's audio, call, confirmation) of its captures into the source
        self._captures: list[tuple[float, float, float]] = []
        self._cap_content = 0.0
        # open until the timer's phase is known, and again while the model may be wrong
        self.tap: AudioLeaveTap | None = None
        self.tap_track: Any = None  # the published audio track the tap subscribes to
        self.taps_opened = 0
        self._next_frame_id = 1
        self._background: set[asyncio.Future[None]] = set()
        self.marks_sent = 0
        self.marks_ambiguous = 0
        self.marks_underrun = 0  # not sent: the audio source may have run dry inside the mark
        self._risks: collections.deque[bool] = collections.deque(maxlen=RISK_OF)
        self.last_skew_s: float | None = None
        self.last_utterance_skew_s: float | None = None

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
                self._out_frames += 1
                self._processing(info)
            self._pending[id(item)] = info
            while len(self._pending) > MAX_PENDING_FRAMES:
                self._pending.popitem(last=False)
            self._last_video = info
            self.ins.frames.add(1, self.attributes())
        elif kind == "audio":
            if not self._out_active:
                self._start_utterance(now)
                self._queued_at_first = self.audio_source_queued_s()
            queued = self.audio_source_queued_s()
            self._leave_starts.append(self._out_audio_s)
            self._leave_at.append(self.ins.clock() + queued)
            self._out_audio_s += float(item.duration)
            self._collect_mark_audio(item)
        else:
            self._end_utterance()

    def wants_capture_timing(self) -> bool:
        """Is the next capture into the audio source within the utterance's timed start?"""
        return self._out_active and self._cap_content < CAPTURE_WINDOW_S

    def on_audio_capture(self, frame: Any, t_call: float, t_done: float) -> None:
        """Audio went into the audio source between ``t_call`` and ``t_done``: for the
        utterance's first chunk, when, and behind how much queued audio; for each chunk of its
        start, whether it came in time for the tick that sends it."""
        if not self._out_active or self._cap_content >= CAPTURE_WINDOW_S:
            return
        if self._first_capture is None:
            self._first_capture = (t_call, t_done, self._queued_at_first)
        self._captures.append((self._cap_content, t_call, t_done))
        self._cap_content += float(frame.duration)

    def on_capture(self, frame: Any, metadata: Any) -> tuple[int, float]:
        """A frame leaves through the video source: its FrameMetadata id and sender time."""
        s_v = self.ins.clock()
        if self._mark_wait is not None:
            self._resolve_mark()  # gives up on a tap that shows nothing
        info = self._pending.pop(id(frame), None)
        if metadata is not None and metadata.HasField("frame_id"):
            frame_id = int(metadata.frame_id)
        elif info is not None:
            frame_id = info.frame_id
        else:  # a frame that did not come out of the generator
            frame_id = self._next_frame_id
            self._next_frame_id += 1
        if info is not None and info.media_t is not None:
            s_a = self._audio_leave(info.media_t)
            if s_a is not None:
                skew = s_v - s_a
                self.last_skew_s = skew
                self.ins.skew.record(abs(skew), self.attributes())
                if info.anchor:
                    self._mark_anchor = (frame_id, s_v)
                    self.last_utterance_skew_s = skew
                    self._maybe_send_mark()
                self._frame_event(frame_id, info, skew)
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

    def _audio_leave(self, media_t: float) -> float | None:
        i = bisect.bisect_right(self._leave_starts, media_t) - 1
        if i < 0:
            return None
        offset = media_t - self._leave_starts[i]
        if i == len(self._leave_starts) - 1 and media_t >= self._out_audio_s:
            return None  # its audio has not come out yet
        estimate = self._leave_at[i] + offset
        if self._leave0 is not None:
            measured = self._leave0 + media_t
            if estimate - measured <= UNDERRUN_S:
                return measured
        return estimate

    def _start_utterance(self, now: float) -> None:
        if self._mark_wait is not None:  # the last utterance's mark is still waiting: decide
            m = self._mark_wait
            m.give_up = float("-inf")
            self._resolve_mark()
            if self._mark_wait is m:
                self._send_mark(m.estimate if m.modelled is None else m.modelled)
        self._out_active = True
        self._out_audio_s = 0.0
        self._leave_starts.clear()
        self._leave_at.clear()
        self._out_frames = 0
        last = self._last_video
        if last is not None and last.media_t is None and now - last.out_t < 1.5 / self.fps:
            # the frame generated with this audio: media time 0
            last.media_t = 0.0
            last.anchor = True
            self._out_frames = 1
            self._processing(last)
        self._mark_seq += 1
        self._mark_env = []
        self._mark_env_s = 0.0
        self._mark_anchor = None
        self._mark_sent = not self.ins.timing_marks
        self._leave0 = None
        self._first_capture = None
        self._captures = []
        self._cap_content = 0.0
        self._frames_in_span = 0
        self._proc_sum, self._proc_n = 0.0, 0
        attrs = self.attributes()
        attrs["syncmon.utterance"] = self._mark_seq
        self._span = self.ins.tracer.start_span("avatar.utterance", attributes=attrs)
        self.ins.utterances.add(1, self.attributes())

    def _end_utterance(self) -> None:
        if self._inputs:
            self._inputs.popleft()
        if not self._out_active:
            return
        self._out_active = False
        span, self._span = self._span, None
        if span is not None:
            span.set_attribute("syncmon.frames", self._out_frames)
            span.set_attribute("syncmon.audio_seconds", round(self._out_audio_s, 4))
            if self._proc_n:
                span.set_attribute(
                    "syncmon.processing_time_ms_mean", 1000.0 * self._proc_sum / self._proc_n
                )
            if self.last_utterance_skew_s is not None:
                span.set_attribute("syncmon.sender_av_skew_ms", 1000.0 * self.last_utterance_skew_s)
            span.end()

    def _frame_event(self, frame_id: int, info: FrameInfo, skew: float) -> None:
        self._frames_in_span += 1
        span = self._span
        if span is None or (self._frames_in_span - 1) % self.ins.frame_event_every:
            return
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

    def _collect_mark_audio(self, frame: Any) -> None:
        if self._mark_sent or self._mark_env_s >= ENV_LEN_S:
            return
        x = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            x = x.reshape(-1, frame.num_channels).mean(axis=1)
        self._mark_env.append(x.astype(np.float32) / 32768.0)
        self._mark_rate = int(frame.sample_rate)
        self._mark_env_s += float(frame.duration)
        self._maybe_send_mark()

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
        tap.on_audio(self._resolve_mark)
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

    def _maybe_send_mark(self) -> None:
        if self._mark_sent or self._mark_anchor is None or self._mark_env_s < ENV_LEN_S:
            return
        self._mark_sent = True
        frame_id, s_v = self._mark_anchor
        env = envelope(np.concatenate(self._mark_env), self._mark_rate)
        n = int(round(ENV_LEN_S / ENV_BLOCK_S))
        self._mark_env = []
        m = PendingMark(self._mark_seq, env[:n], self._leave_at[0], frame_id, s_v)
        m.modelled_mono = self._modelled_leave()
        m.modelled = None if m.modelled_mono is None else self._sender_time(m.modelled_mono)
        m.give_up = self.ins.clock() + MARK_WAIT_S
        self._mark_wait = m
        self._resolve_mark()

    def _modelled_leave(self) -> float | None:
        """When the utterance's first audio left, from when it went into the source: the
        source's 10 ms timer sends it at the first tick after it, behind what was queued.
        ``None`` when a tick fell between the call and its return (which tick took it is not
        known) or nothing is known yet."""
        if self.tick_phase is None or self._first_capture is None:
            return None
        t_call, t_done, queued = self._first_capture
        since_tick = (t_call - self.tick_phase) % TICK_S
        if since_tick + (t_done - t_call) >= TICK_S:
            return None
        # what is queued leaves first; the source's estimate drains it continuously, the timer
        # in 10 ms steps
        ahead = TICK_S * round((queued + since_tick) / TICK_S) if queued > 1e-4 else 0.0
        # (on the tap's and the monitor's convention: a 10 ms block is timed at its start)
        return t_call - since_tick + ahead

    def _resolve_mark(self) -> None:
        """Called as audio and frames go out: can the waiting mark's leave be told yet?"""
        m = self._mark_wait
        if m is None:
            return
        fallback = m.estimate if m.modelled is None else m.modelled
        if self.tap is not None:
            res = self.tap.find(m.template, m.estimate - self._sender_time(0.0))
            if isinstance(res, tuple):
                self._send_mark(self._sender_time(self._calibrate(res[0], m)))
            elif res is False or self.ins.clock() > m.give_up:
                log.debug("utterance not found in the audio tap: its mark goes with the estimate")
                self._send_mark(fallback)
            return
        if self.tick_phase is None:  # no tap (turned off, or the room went away before it)
            self._send_mark(fallback)
            return
        if m.modelled is None:  # better no estimate than one a timer step off
            self._drop_mark("its audio's tick is ambiguous")
            self.marks_ambiguous += 1
            return
        risk = self._underrun_risk(m)
        if risk is None and self.ins.clock() <= m.give_up:
            return  # its audio is still going into the source
        self._risks.append(risk is not False)
        if risk is False:
            self._send_mark(m.modelled)
            return
        # the audio that left may not be the audio modelled
        self.marks_underrun += 1
        if sum(self._risks) >= RISKY_MARKS:
            self._drop_mark("the audio source may have run dry inside it; the tap reopens")
            self._risks.clear()
            self._agree = 0
            self._open_tap()
        else:
            self._drop_mark("the audio source may have run dry inside it")

    def _drop_mark(self, why: str) -> None:
        assert self._mark_wait is not None
        log.debug("utterance %d: %s, no timing mark", self._mark_wait.seq, why)
        self._mark_wait = None

    def _underrun_risk(self, m: PendingMark) -> bool | None:
        """Did a capture of the utterance's start come too late for the tick that sends it
        (the source ran dry, and what followed left a tick late)? ``None`` while its start is
        still going in; never ``True`` for audio queued far enough ahead."""
        if m.modelled_mono is None:
            return None
        for offset, _, t_done in self._captures:
            if t_done > m.modelled_mono + offset + TICK_S - CAPTURE_GUARD_S:
                return True
        if self._out_active and self._cap_content < min(CAPTURE_WINDOW_S, self._out_audio_s):
            return None
        return False

    def _sender_time(self, t_mono: float) -> float:
        return t_mono + (self.ins.clock() - time.monotonic())

    def _calibrate(self, s_a: float, m: PendingMark) -> float:
        """A leave measured on the tap (monotonic clock); once the tap knows the phase of the
        source's timer (and enough utterances agree with it), the tap closes and leaves are
        modelled."""
        assert self.tap is not None
        phase = self.tap.timer_phase()
        if phase is None:
            log.debug("audio source timer: no phase yet (%d chunks)", self.tap.chunks)
            return s_a
        # an utterance starts on a tick (its audio goes in whole 10 ms blocks)
        snapped = phase + TICK_S * round((s_a - phase) / TICK_S)
        if abs(snapped - s_a) > PHASE_SPREAD_S:
            return s_a  # (the tap's own reading came late: a busy loop)
        if self.tick_phase is not None and self._underrun_risk(m) is not False:
            self._agree = 0  # a reopened tap closes after utterances the model would get right
            return snapped
        self._agree += 1
        log.debug(
            "audio left %.1f ms after the estimate (tap %.2f ms off the timer's phase %.2f ms)",
            1000 * (self._sender_time(snapped) - m.estimate),
            1000 * (s_a - snapped),
            1000 * phase,
        )
        if self._agree >= CALIBRATION_MARKS:
            self.tick_phase = phase
            log.debug("audio source timer phase %.2f ms: the tap closes", 1000 * phase)
            self._close_tap()
        return snapped

    def _send_mark(self, s_a: float) -> None:
        m = self._mark_wait
        assert m is not None
        self._mark_wait = None
        seq, tmpl, frame_id, s_v = m.seq, m.template, m.frame_id, m.s_v
        if seq == self._mark_seq and self._out_active:
            self._leave0 = s_a
            self.last_utterance_skew_s = s_v - s_a
        mark = TimingMark(
            seq=seq,
            t_audio_us=int(round(s_a * 1e6)),
            skew_us=int(round((s_v - s_a) * 1e6)),
            frame_id=frame_id,
            env=tuple(float(v) for v in tmpl),
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
