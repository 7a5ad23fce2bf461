"""OpenTelemetry instrumentation of livekit-agents' avatar path (``AvatarRunner``).

    from syncmon.instrument import AvatarInstrumentor
    AvatarInstrumentor().instrument()          # before the AvatarRunner is created

What it records, per runner, with ``lk.room_name``, ``lk.participant_identity`` and
``lk.track_sid`` (the avatar's video track) so that traces and metrics join the monitor's series:

- a span ``avatar.utterance`` per utterance (the generator's first audio out to its
  ``AudioSegmentEnd``), with one ``avatar.frame`` event every ``frame_event_every`` frames
  (default 25: one a second at 25 fps) -- a span per frame would be 25 spans a second per avatar;
- histograms ``syncmon.agent.processing_time`` (audio pushed into the generator -> its frame out)
  and ``syncmon.agent.sender_av_skew_abs``, with the gauge ``syncmon.agent.sender_av_skew``
  (a frame's picture leaves the video source minus its audio leaves the audio source; positive:
  picture late, as the monitor's offsets; OTel histograms take no negative values) and beside it
  ``syncmon.agent.sender_av_skew_uncertainty`` (how far the gauge may be off);
- gauges of the buffers: ``syncmon.agent.audio_backlog`` (audio in the generator, s),
  ``syncmon.agent.sync_video_queue`` (the A/V synchronizer's queued frames),
  ``syncmon.agent.audio_source_queued`` (s), ``syncmon.agent.runtime_queue`` and its
  ``_capacity`` (the avatar runtime's own queues, bitHuman's input and output buffers);
- counters ``syncmon.agent.frames`` and ``syncmon.agent.utterances``.

It also stamps every video frame with FrameMetadata (``frame_id``, ``user_timestamp`` = sender
time in microseconds), asks for those features when the avatar publishes its video, and sends
timing marks (``syncmon.marks``: an utterance's start and every half second of it), so that the
monitor reports the ``timestamp`` offset. When the audio leaves is measured, not estimated: a sink
on the published audio track (``audio_tap=False`` turns it off) sees the source's output for the
first utterances and learns the phase of the source's timer (``syncmon.instrument._leave``), and
every capture into the source is timed, so that each part of an utterance's audio is placed on
the tick that sent it (``syncmon.instrument._schedule``). Where a chunk came in at or after its
tick, the rest is placed as a source whose timer keeps time runs (dry until the chunk is in):
the gauge shows that, the uncertainty gauge a tick per chunk so placed, and the histogram and
the timing marks take only what is known. A failure inside a hook is counted and logged at
debug level; the avatar goes on.

Providers: the ``tracer_provider`` / ``meter_provider`` arguments; else the tracer provider
given to livekit-agents' ``telemetry.set_tracer_provider``; else the global ones. It never sets
a provider itself (see ``syncmon.instrument.export`` for that).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from typing import Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)
from opentelemetry.metrics import CallbackOptions, Observation

from ..metric_names import OFFSET_ABS_BUCKETS
from ._tracker import Instruments, RunnerTracker

__all__ = ["AvatarInstrumentor", "RunnerTracker"]

log = logging.getLogger(__name__)

_INSTRUMENTS = ("livekit-agents >= 1.8, < 1.9",)
VERSION = "0.1.0"
PROCESSING_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.12, 0.16, 0.24, 0.32, 0.5, 0.75, 1.0, 2.0)
# the monitor's |offset| buckets (DESIGN.md's band edges: 15, 45, 90, 125, 185 ms)
SKEW_BUCKETS = OFFSET_ABS_BUCKETS


def _agents_tracer_provider() -> trace_api.TracerProvider | None:
    """The provider the application gave livekit-agents, if agents is importable."""
    try:
        from livekit.agents.telemetry import traces
    except Exception:
        return None
    provider = getattr(traces.tracer, "_tracer_provider", None)
    return provider if isinstance(provider, trace_api.TracerProvider) else None


def _defining_class(cls: type, name: str) -> type | None:
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


def _instruments(
    tracer: Any, meter: Any, clock: Callable[[], float], kwargs: dict[str, Any]
) -> Instruments:
    """The histograms and counters every tracker records into."""
    return Instruments(
        tracer=tracer,
        processing=meter.create_histogram(
            "syncmon.agent.processing_time",
            unit="s",
            description="Audio pushed into the avatar generator to its video frame out",
            explicit_bucket_boundaries_advisory=PROCESSING_BUCKETS,
        ),
        skew=meter.create_histogram(
            "syncmon.agent.sender_av_skew_abs",
            unit="s",
            description="|sender A/V skew| per frame (OTel histograms take no negative "
            "values; the signed skew is the gauge syncmon.agent.sender_av_skew)",
            explicit_bucket_boundaries_advisory=SKEW_BUCKETS,
        ),
        frames=meter.create_counter(
            "syncmon.agent.frames", unit="1", description="Video frames generated"
        ),
        utterances=meter.create_counter(
            "syncmon.agent.utterances", unit="1", description="Utterances rendered"
        ),
        first_frame=meter.create_histogram(
            "syncmon.agent.first_frame_latency",
            unit="s",
            description="An utterance's audio into the avatar to its first picture leaving",
            explicit_bucket_boundaries_advisory=PROCESSING_BUCKETS,
        ),
        frame_event_every=max(1, int(kwargs.get("frame_event_every", 25))),
        clock=clock,
        timing_marks=bool(kwargs.get("timing_marks", True)),
    )


class AvatarInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instruments ``AvatarRunner``, its ``VideoGenerator``, A/V synchronizer and sources."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    # -- set-up ----------------------------------------------------------------------------
    def _instrument(self, **kwargs: Any) -> None:
        from livekit import rtc
        from livekit.agents.voice.avatar import AvatarRunner

        tracer_provider = kwargs.get("tracer_provider") or _agents_tracer_provider()
        tracer = trace_api.get_tracer(__name__, VERSION, tracer_provider=tracer_provider)
        meter = metrics_api.get_meter(
            __name__, VERSION, meter_provider=kwargs.get("meter_provider")
        )
        shift = float(kwargs.get("clock_shift_s", 0.0))
        clock: Callable[[], float] = kwargs.get("clock") or (lambda: time.time() + shift)
        self._ins = _instruments(tracer, meter, clock, kwargs)
        self._by_source: weakref.WeakKeyDictionary[Any, RunnerTracker] = weakref.WeakKeyDictionary()
        self._by_generator_cls: set[tuple[type, str]] = set()
        self._live: list[RunnerTracker] = []
        self._audio_tap = bool(kwargs.get("audio_tap", True)) and self._ins.timing_marks
        self._wrapped: list[tuple[type, str, Any]] = []
        self.errors = 0

        self._observe_gauges(meter)

        self._wrap(AvatarRunner, "__init__", self._runner_init)
        self._wrap(AvatarRunner, "aclose", self._runner_aclose)
        self._wrap(rtc.VideoSource, "capture_frame", self._capture_frame)
        self._wrap(rtc.AudioSource, "capture_frame", self._capture_audio)
        self._wrap(rtc.LocalParticipant, "publish_track", self._publish_track)
        try:
            from livekit.plugins.bithuman.avatar import BithumanGenerator

            self._wrap_generator_cls(BithumanGenerator)
        except ImportError:
            pass

    def _observe_gauges(self, meter: Any) -> None:
        """The gauges read from the live trackers at each collection."""
        meter.create_observable_gauge(
            "syncmon.agent.sender_av_skew",
            [self._observe(lambda t: t.last_skew_s)],
            unit="s",
            description="A frame's picture leaving the video source minus its audio leaving "
            "the audio source, latest frame (positive: picture late, as the monitor's offsets)",
        )
        meter.create_observable_gauge(
            "syncmon.agent.sender_av_skew_uncertainty",
            [self._observe(lambda t: t.last_skew_unc_s)],
            unit="s",
            description="How far the skew gauge may be off: 0 where its audio's leave is "
            "known, a 10 ms tick per chunk the send schedule placed (a chunk that came in at or "
            "after its tick: the source may have run dry, or its timer run late and taken it)",
        )
        meter.create_observable_gauge(
            "syncmon.agent.audio_backlog",
            [self._observe(lambda t: t.audio_backlog_s())],
            unit="s",
            description="Audio pushed into the avatar generator and not out of it yet",
        )
        meter.create_observable_gauge(
            "syncmon.agent.sync_video_queue",
            [self._observe(lambda t: t.sync_video_queue())],
            unit="{frame}",
            description="Video frames queued in the A/V synchronizer",
        )
        meter.create_observable_gauge(
            "syncmon.agent.audio_source_queued",
            [self._observe(lambda t: t.audio_source_queued_s())],
            unit="s",
            description="Audio queued in the audio source",
        )
        meter.create_observable_gauge(
            "syncmon.agent.runtime_queue",
            [self._observe_runtime(0)],
            unit="{item}",
            description="Depth of the avatar runtime's own queues (attribute queue)",
        )
        meter.create_observable_gauge(
            "syncmon.agent.runtime_queue_capacity",
            [self._observe_runtime(1)],
            unit="{item}",
            description="Configured size of the avatar runtime's own queues",
        )

    def _uninstrument(self, **kwargs: Any) -> None:
        for cls, name, original in reversed(self._wrapped):
            setattr(cls, name, original)
        self._wrapped.clear()
        self._by_generator_cls.clear()
        self._live.clear()

    # -- wrapping --------------------------------------------------------------------------
    def _wrap(self, cls: type, name: str, make: Callable[[Any], Any]) -> None:
        original = vars(cls)[name]
        wrapper = make(original)
        wrapper.__wrapped__ = original
        wrapper.__syncmon_wrapper__ = True
        setattr(cls, name, wrapper)
        self._wrapped.append((cls, name, original))

    def _wrap_generator_cls(self, gen_cls: type) -> None:
        for name, make in (("push_audio", self._push_audio), ("__aiter__", self._aiter)):
            klass = _defining_class(gen_cls, name)
            if klass is None or (klass, name) in self._by_generator_cls:
                continue
            if getattr(vars(klass)[name], "__isabstractmethod__", False):
                continue
            self._by_generator_cls.add((klass, name))
            self._wrap(klass, name, make)

    def _fail(self, what: str, e: BaseException) -> None:
        self.errors += 1
        if self.errors <= 5:
            log.debug("syncmon instrumentation error in %s: %r", what, e)

    def _tracker_of_generator(self, gen: Any) -> RunnerTracker | None:
        for t in self._live:
            if t.generator is gen:
                return t
        return None

    def _runner_init(self, original: Any) -> Any:
        inst = self

        def __init__(runner: Any, *args: Any, **kwargs: Any) -> None:
            original(runner, *args, **kwargs)
            try:
                t = RunnerTracker(inst._ins, runner)
                inst._by_source[runner._video_source] = t
                inst._by_source[runner._audio_source] = t
                inst._live = [x for x in inst._live if x._runner() is not None] + [t]
                inst._wrap_generator_cls(type(runner._video_gen))
                t.extra_attrs.update(_generator_attributes(runner._video_gen))
            except Exception as e:
                inst._fail("AvatarRunner.__init__", e)

        return __init__

    def _runner_aclose(self, original: Any) -> Any:
        inst = self

        async def aclose(runner: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return await original(runner, *args, **kwargs)
            finally:
                # its tasks are stopped: the utterance it was sending ends here, and the spans
                # that waited for marks end with what they have (else never exported)
                for t in [x for x in inst._live if x._runner() is runner]:
                    try:
                        await t.aclose()
                    except Exception as e:
                        inst._fail("AvatarRunner.aclose", e)

        return aclose

    def _push_audio(self, original: Any) -> Any:
        inst = self

        async def push_audio(gen: Any, frame: Any) -> Any:
            try:
                t = inst._tracker_of_generator(gen)
                if t is not None:
                    from livekit.agents.voice.avatar import AudioSegmentEnd

                    t.on_push_audio(frame, isinstance(frame, AudioSegmentEnd))
            except Exception as e:
                inst._fail("push_audio", e)
            return await original(gen, frame)

        return push_audio

    def _aiter(self, original: Any) -> Any:
        inst = self

        def __aiter__(gen: Any) -> AsyncIterator[Any]:
            it = original(gen)
            t = inst._tracker_of_generator(gen)
            if t is None:
                return it  # type: ignore[no-any-return]
            return inst._observed(t, it)

        return __aiter__

    async def _observed(self, t: RunnerTracker, it: AsyncIterator[Any]) -> AsyncIterator[Any]:
        from livekit import rtc

        async for item in it:
            try:
                if isinstance(item, rtc.VideoFrame):
                    kind = "video"
                elif isinstance(item, rtc.AudioFrame):
                    kind = "audio"
                else:
                    kind = "end"
                t.on_output(item, kind)
            except Exception as e:
                self._fail("generator output", e)
            yield item

    def _capture_frame(self, original: Any) -> Any:
        inst = self

        def capture_frame(source: Any, frame: Any, **kwargs: Any) -> Any:
            t = inst._by_source.get(source)
            if t is not None:
                try:
                    from livekit.rtc._proto import video_frame_pb2

                    md = kwargs.get("metadata")
                    frame_id, s_v = t.on_capture(frame, md)
                    if md is None:
                        kwargs["metadata"] = video_frame_pb2.FrameMetadata(
                            frame_id=frame_id, user_timestamp=int(s_v * 1e6)
                        )
                except Exception as e:
                    inst._fail("capture_frame", e)
            return original(source, frame, **kwargs)

        return capture_frame

    def _capture_audio(self, original: Any) -> Any:
        inst = self

        async def capture_frame(source: Any, frame: Any) -> None:
            t = inst._by_source.get(source)
            if t is None or not t.wants_capture_timing():
                return await original(source, frame)  # type: ignore[no-any-return]
            from livekit.rtc._ffi_client import FfiClient

            # the SDK confirms the capture once the audio is in the source's buffer; that event
            # is timed where it arrives (the FFI's thread), not when this loop gets to it
            confirmed: list[float] = []

            def seen(ev: Any) -> bool:
                if ev.WhichOneof("message") == "capture_audio_frame":
                    confirmed.append(time.monotonic())
                return False

            ffi_queue = FfiClient.instance.queue
            sub = ffi_queue.subscribe(filter_fn=seen)
            t_call = time.monotonic()
            try:
                await original(source, frame)
            finally:
                ffi_queue.unsubscribe(sub)
            # (one confirmation in between is this one; more: another source's, unknown order)
            t_done = confirmed[0] if len(confirmed) == 1 else time.monotonic()
            try:  # the audio went into the source's buffer between the two
                t.on_audio_capture(frame, t_call, t_done)
            except Exception as e:
                inst._fail("AudioSource.capture_frame", e)

        return capture_frame

    def _publish_track(self, original: Any) -> Any:
        inst = self

        async def publish_track(participant: Any, track: Any, options: Any = None) -> Any:
            from livekit import rtc
            from livekit.rtc._proto import track_pb2

            owner: RunnerTracker | None = None
            try:
                for t in inst._live:
                    if t.room.isconnected() and t.room.local_participant is participant:
                        owner = t
                        break
                if owner is not None and isinstance(track, rtc.LocalVideoTrack):
                    opts = rtc.TrackPublishOptions()
                    if options is not None:
                        opts.CopyFrom(options)
                    have = set(opts.frame_metadata_features)
                    for f in (
                        track_pb2.FrameMetadataFeature.FMF_FRAME_ID,
                        track_pb2.FrameMetadataFeature.FMF_USER_TIMESTAMP,
                    ):
                        if f not in have:
                            opts.frame_metadata_features.append(f)
                    options = opts
            except Exception as e:
                inst._fail("publish_track", e)
            if options is None:
                pub = await original(participant, track)
            else:
                pub = await original(participant, track, options)
            if owner is not None:
                try:
                    if isinstance(track, rtc.LocalVideoTrack):
                        owner.track_sid = pub.sid
                    elif isinstance(track, rtc.LocalAudioTrack) and inst._audio_tap:
                        owner.attach_audio_track(track)
                except Exception as e:
                    inst._fail("publish_track", e)
            return pub

        return publish_track

    # -- observable gauges -----------------------------------------------------------------
    def _trackers_alive(self) -> list[RunnerTracker]:
        self._live = [t for t in self._live if t._runner() is not None]
        return list(self._live)

    def _observe(
        self, read: Callable[[RunnerTracker], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def cb(_: CallbackOptions) -> Iterable[Observation]:
            out = []
            for t in self._trackers_alive():
                try:
                    v = read(t)
                    if v is not None:  # unknown is absent, never a made-up zero
                        out.append(Observation(v, t.attributes()))
                except Exception as e:
                    self._fail("gauge", e)
            return out

        return cb

    def _observe_runtime(self, index: int) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def cb(_: CallbackOptions) -> Iterable[Observation]:
            out = []
            for t in self._trackers_alive():
                try:
                    for name, pair in t.runtime_queues().items():
                        out.append(Observation(pair[index], {**t.attributes(), "queue": name}))
                except Exception as e:
                    self._fail("runtime gauge", e)
            return out

        return cb

    def trackers(self) -> list[RunnerTracker]:
        """The runners instrumented so far that are still alive."""
        return self._trackers_alive()


def _generator_attributes(gen: Any) -> dict[str, Any]:
    """What a generator tells about its configuration (bitHuman: buffers, threads, model)."""
    attrs: dict[str, Any] = {}
    probe = getattr(gen, "syncmon_attributes", None)
    if callable(probe):
        attrs.update(probe())
    runtime = getattr(gen, "_runtime", None)
    if runtime is not None and any(
        c.__module__.startswith("bithuman") for c in type(runtime).__mro__
    ):
        for name, attr in (
            ("input_buffer_size", "_in_queue"),
            ("output_buffer_size", "_out_queue"),
        ):
            q = getattr(runtime, attr, None)
            if q is not None:
                attrs[f"bithuman.{name}"] = int(getattr(q, "maxsize", 0))
        threads = getattr(runtime, "_num_threads", None)
        if threads is not None:
            attrs["bithuman.num_threads"] = int(threads)
        model = getattr(runtime, "_model_path", None)
        if model:
            attrs["bithuman.model"] = str(model).rsplit("/", 1)[-1]
    return attrs
