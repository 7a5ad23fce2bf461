"""One monitored avatar: its subscribed tracks in, timestamped samples to the analyzer out.

Only the luma plane of video is touched; audio comes resampled to 16 kHz mono by the SDK. Video
is timestamped by the SDK's render time (``timestamp_us``, the receiver's monotonic clock);
audio carries no timestamp, so a sample clock steered by arrivals stands in
(``analysis.clock``). Both queues are unbounded: a frame dropped by syncmon would be counted
as the avatar's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import numpy as np
from livekit import rtc
from livekit.rtc._ffi_client import FfiClient, FfiHandle
from livekit.rtc._proto import audio_frame_pb2 as proto_audio
from livekit.rtc._proto import ffi_pb2 as proto_ffi
from livekit.rtc._proto import video_frame_pb2 as proto_video

from ..analysis.audio import ANALYSIS_RATE
from ..analysis.clock import SampleClock
from ..analysis.session import SyncAnalyzer
from ..heap import fit_to_frames
from ..logs import RateLimitedLog
from .state import AvatarState, RtpStats

log = logging.getLogger(__name__)
RESTART_INITIAL_S = 1.0
RESTART_MAX_S = 30.0
# malformed input from a participant: one line per participant and kind a minute
MALFORMED_LOG = RateLimitedLog(log)
BEHIND_LOG = RateLimitedLog(log)

AUDIO_RATE = ANALYSIS_RATE
AUDIO_FRAME_MS = 50
STATS_INTERVAL_S = 2.0
# a frame this dark and flat before the first real picture is the decoder's pre-roll
PREROLL_MAX_MEAN = 20.0
PREROLL_MAX_STD = 3.0


class UnboundedVideoStream(rtc.VideoStream):
    """A VideoStream whose native queue is unbounded as well (``queue_size_frames = 0``).

    The Python class leaves the native queue at a bounded default that drops frames when the
    consumer lags ("native video stream queue overflow"); those drops would be blamed on the
    avatar. This is the SDK's own request with that one field set.
    """

    def _create_owned_stream(self) -> Any:
        assert self._track is not None
        req = proto_ffi.FfiRequest()
        nvs = req.new_video_stream
        nvs.track_handle = self._track._ffi_handle.handle
        nvs.type = proto_video.VideoStreamType.VIDEO_STREAM_NATIVE
        nvs.format = proto_video.VideoBufferType.I420
        nvs.normalize_stride = True
        nvs.queue_size_frames = 0
        resp = FfiClient.instance.request(req)
        stream = resp.new_video_stream.stream
        own_events_only(self._ffi_queue, "video_stream_event", int(stream.handle.id))
        return stream


def own_events_only(queue: Any, kind: str, handle: int, fq: Any = None) -> None:
    """Narrow a stream's subscription to the FFI's events (``queue``, made by the SDK's stream
    for every event of its ``kind``) to its own stream's, ``handle``.

    The SDK subscribes each stream to every stream's events of its kind, and each stream's task
    discards the others': with k avatars in a process every frame is handed to the event loop
    k times (a thread hop each, and the native frame kept until its own stream's task reaches
    it), and an audio frame is stamped when its task reads it. The events that
    reached the queue before this are the kind's (a superset: its task still picks its own);
    after it, only its own. Without the SDK's subscriber list (a future SDK) it stays as the
    SDK made it, logged once. ``fq``: the FFI's event queue (the SDK's client's)."""
    fq = FfiClient.instance.queue if fq is None else fq

    def own(e: proto_ffi.FfiEvent) -> bool:
        return bool(e.WhichOneof("message") == kind and getattr(e, kind).stream_handle == handle)

    try:
        with fq._lock:
            for i, (q, loop, _) in enumerate(fq._subscribers):
                if q is queue:
                    fq._subscribers[i] = (q, loop, own)
                    return
    except (AttributeError, TypeError, ValueError) as e:
        _narrow_failed(f"{type(e).__name__}: {e}")
        return
    _narrow_failed("its subscription was not found")


def _narrow_failed(why: str) -> None:
    global _NARROW_WARNED
    if not _NARROW_WARNED:
        _NARROW_WARNED = True
        log.warning(
            "the SDK's event subscriptions could not be narrowed (%s): every stream is handed "
            "every stream's events, which costs CPU with many avatars in one process",
            why,
        )


_NARROW_WARNED = False


# A stream's items are analysed in batches: the consumer drains what has arrived, then sleeps
# this long. The analysis of a lone frame on a core that has just woken costs two to three
# times what the same frame costs among others (the caches and the clock cold: 1.08 against
# 0.44 ms a frame in process, the analysis paced at 25 fps or not); five frames in a row cost
# a third less each. Times are the frames' own (video) and their arrival (audio, stamped where
# the SDK's event reaches the loop), so the batch delays the figures, never moves them.
BATCH_S = 0.2
# the longest one stream's backlog holds the loop: the items come without a wait while there
# are any, and a backlog (a host that fell behind) analysed in one go held every other stream,
# the audio's arrival stamps and the /metrics scrape for as long
HOLD_S = 0.02
# A monitor whose host is short of CPU falls behind the picture: its queue (unbounded, so that
# nothing it drops is blamed on the avatar) grows by a decoded frame at a time, 1.4 MB at 720p,
# until the process is killed. Further behind than this (seconds of the picture queued,
# unanalysed) it sheds what is queued, counts it as its own (syncmon_monitor_frames_shed_total),
# and starts the avatar's timing and windows afresh, as after a reconnect: no freeze, drop or
# offset spans the frames it did not see. In step it runs BATCH_S behind, and a scrape or an
# estimate holds it for tens of milliseconds.
MAX_BACKLOG_S = 2.0


class _Drained:
    """The SDK's stream's queue of received items, read without waiting."""

    _queue: Any  # livekit.rtc._utils.RingQueue
    _held_since: float | None = None
    _woke = True

    def drained(self) -> bool:
        return not self._queue._queue

    def behind_s(self, timestamp_us: int) -> float:
        """Seconds of the stream queued after an item of ``timestamp_us``: the newest timed
        item's time less that (0 when none of the last few queued is timed: a malformed one
        is not)."""
        q = self._queue._queue
        for k in range(1, min(len(q), 8) + 1):
            newest = getattr(q[-k], "timestamp_us", None)
            if newest is not None:
                return max(0.0, (int(newest) - timestamp_us) / 1e6)
        return 0.0

    def woke(self) -> bool:
        """True once after each of the batch's sleeps: the item read is a batch's first."""
        woke, self._woke = self._woke, False
        return woke

    def shed(self) -> int:
        """Drop every queued item (their native buffers freed with them); how many."""
        q = self._queue._queue
        count = len(q)
        q.clear()
        return count

    async def pace(self) -> None:
        """After an item: sleep BATCH_S once nothing is waiting; otherwise let the loop run
        every HOLD_S of work."""
        now = time.monotonic()
        if self.drained():
            await asyncio.sleep(BATCH_S)
            self._held_since = None
            self._woke = True
        elif self._held_since is None:
            self._held_since = now
        elif now - self._held_since >= HOLD_S:
            await asyncio.sleep(0)
            self._held_since = time.monotonic()


class LumaFrame(NamedTuple):
    """A received video frame as the analysis takes it: its luma plane, read in place."""

    luma: np.ndarray  # (height, width) uint8, a view of the SDK's native buffer
    timestamp_us: int
    frame_id: int | None
    sender_time_us: int | None


class LumaStream(_Drained, UnboundedVideoStream):
    """An unbounded video stream whose frames are luma planes read where the SDK decoded them.

    ``VideoStream`` copies every decoded I420 frame into a new ``bytearray`` (1.4 MB a 720p
    frame, 35 MB/s at 25 fps, each a fresh mapping of the heap) and asks the FFI for the plane
    layout whenever a plane is read; the analysis needs the luma plane alone, read once. Here a
    frame is a numpy view of the native buffer's Y plane, and the buffer's handle rides on the
    view: it is dropped (the buffer freed) when the last view of it is, so a view kept past
    its frame stays valid, and the frame costs nothing once the analysis let go of it.

    Items are ``LumaFrame``, or ``ValueError`` for a frame whose buffer was malformed (counted
    by the consumer, the stream going on).
    """

    def __aiter__(self) -> LumaStream:  # type: ignore[override]
        return self

    async def __anext__(self) -> LumaFrame | ValueError:  # type: ignore[override]
        return cast("LumaFrame | ValueError", await super().__anext__())

    async def _run(self) -> None:  # the SDK's loop, less the copy
        try:
            while True:
                event = await self._ffi_queue.wait_for(self._is_event)
                video_event = event.video_stream_event
                if video_event.HasField("frame_received"):
                    item = _luma_frame(video_event.frame_received)
                    self._queue.put(item)
                elif video_event.HasField("eos"):
                    break
        finally:
            FfiClient.instance.queue.unsubscribe(self._ffi_queue)


def _luma_frame(received: proto_video.VideoFrameReceived) -> LumaFrame | ValueError:
    try:
        luma = luma_view(received.buffer)
    except ValueError as e:
        return e
    md = received.metadata if received.HasField("metadata") else None
    if md is None:
        return LumaFrame(luma, int(received.timestamp_us), None, None)
    return LumaFrame(
        luma,
        int(received.timestamp_us),
        int(md.frame_id) if md.HasField("frame_id") else None,
        int(md.user_timestamp) if md.HasField("user_timestamp") else None,
    )


def luma_view(buffer: proto_video.OwnedVideoBuffer) -> np.ndarray:
    """The Y plane of a received I420 buffer as a (height, width) view of the native memory.

    The buffer's handle is owned from the start: whatever is wrong with the frame, it is
    dropped when the last reference to it is, and a valid view keeps it alive.
    """
    handle = FfiHandle(buffer.handle.id)
    info = buffer.info
    w, h = int(info.width), int(info.height)
    if info.type not in _LUMA_FIRST:
        raise ValueError(f"video frame of type {info.type} has no luma plane")
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise ValueError(f"video frame is {w}x{h}")
    if len(info.components) > 0:
        ptr, stride = int(info.components[0].data_ptr), int(info.components[0].stride)
    else:
        ptr, stride = int(info.data_ptr), w
    if ptr == 0 or not w <= stride <= 4 * w:
        raise ValueError(f"video frame {w}x{h} has a luma plane at {ptr:#x}, stride {stride}")
    cbuf = (ctypes.c_uint8 * (stride * h)).from_address(ptr)
    # the memory's owner, kept by every view of it
    cbuf._syncmon_handle = handle  # type: ignore[attr-defined]
    return np.frombuffer(memoryview(cbuf), dtype=np.uint8).reshape(h, stride)[:, :w]


# formats whose first plane is the luma
_LUMA_FIRST = frozenset(
    (
        proto_video.VideoBufferType.I420,
        proto_video.VideoBufferType.I420A,
        proto_video.VideoBufferType.I422,
        proto_video.VideoBufferType.I444,
        proto_video.VideoBufferType.NV12,
    )
)
MAX_SIDE = 16384


class AudioChunk(NamedTuple):
    """A received audio frame as the analysis takes it."""

    samples: np.ndarray  # mono float32 in [-1, 1)
    arrival: float  # time.monotonic() when the frame reached the event loop


class StampedAudioStream(_Drained, rtc.AudioStream):
    """An audio stream whose frames carry the time they arrived (the analysis runs later, in
    batches), converted to float samples straight from the SDK's buffer. Items are
    ``AudioChunk``, or ``ValueError`` for a frame that is not what the stream asked for."""

    def __aiter__(self) -> StampedAudioStream:  # type: ignore[override]
        return self

    async def __anext__(self) -> AudioChunk | ValueError:  # type: ignore[override]
        return cast("AudioChunk | ValueError", await super().__anext__())

    def _create_owned_stream(self) -> Any:
        stream = super()._create_owned_stream()
        own_events_only(self._ffi_queue, "audio_stream_event", int(stream.handle.id))
        return stream

    async def _run(self) -> None:  # the SDK's loop, stamped (no audio processor is set here)
        try:
            while True:
                event = await self._ffi_queue.wait_for(self._is_event)
                audio_event = event.audio_stream_event
                if audio_event.HasField("frame_received"):
                    owned = audio_event.frame_received.frame
                    item: AudioChunk | ValueError
                    try:
                        item = AudioChunk(audio_samples(owned), time.monotonic())
                    except ValueError as e:
                        item = e
                    self._queue.put(item)
                elif audio_event.HasField("eos"):
                    self._queue.put(None)
                    break
        finally:
            FfiClient.instance.queue.unsubscribe(self._ffi_queue)


def audio_stream(track: rtc.Track) -> StampedAudioStream:
    """A received voice as the analysis takes it: 16 kHz mono, in 50 ms frames (a fifth of the
    events, each a thread hop into the loop, of 10 ms), unbounded (a frame dropped by syncmon
    would be blamed on the sender)."""
    return StampedAudioStream(
        track, sample_rate=AUDIO_RATE, num_channels=1, capacity=0, frame_size_ms=AUDIO_FRAME_MS
    )


MAX_AUDIO_FRAME = AUDIO_RATE  # samples: a second, twenty times what the stream asks for


def audio_samples(owned: proto_audio.OwnedAudioFrameBuffer) -> np.ndarray:
    """A received int16 mono frame as float32 samples in [-1, 1) (its buffer given back)."""
    handle = FfiHandle(owned.handle.id)
    try:
        info = owned.info
        n, ch, rate = int(info.samples_per_channel), int(info.num_channels), int(info.sample_rate)
        if ch != 1 or rate != AUDIO_RATE:
            raise ValueError(f"audio frame is {ch} channels at {rate} Hz, not mono {AUDIO_RATE}")
        if not 0 < n <= MAX_AUDIO_FRAME or info.data_ptr == 0:
            raise ValueError(f"audio frame of {n} samples at {int(info.data_ptr):#x}")
        pcm = (ctypes.c_int16 * n).from_address(int(info.data_ptr))
        x = np.frombuffer(memoryview(pcm), dtype=np.int16).astype(np.float32)
    finally:
        handle.dispose()
    x *= 1.0 / 32768.0  # (in place: one array a frame, not two)
    return x


def is_preroll(luma: np.ndarray) -> bool:
    sub = luma[::8, ::8]
    return float(sub.mean()) < PREROLL_MAX_MEAN and float(sub.std()) < PREROLL_MAX_STD


# A synced pair's playout stamps can be missing from a poll or two (at a track's start, and on a
# loaded host, where the sync module's estimate lags the frames): a decision that viewers
# lip-sync is taken back only after this long without them, so that a flicker never turns the
# content offset into the received one. The server's configuration does not change mid-room.
SYNC_LOST_S = 20.0


class ViewerSync:
    """Whether viewers lip-sync an avatar's audio and video, from the playout stamps libwebrtc
    reports only for a synced pair (both tracks' stats read at ``now``, ``paired`` if both carry
    one). Synced once two of the last three polls saw the pair; not synced at first after two
    polls in a row without it, and once synced only when none saw it for ``lost_s``."""

    def __init__(self, lost_s: float = SYNC_LOST_S) -> None:
        self.lost_s = lost_s
        self.value: bool | None = None
        self._recent: list[bool] = []
        self._unpaired_since: float | None = None

    def reading(self, paired: bool, now: float) -> bool | None:
        self._recent = [*self._recent[-2:], paired]
        if paired:
            self._unpaired_since = None
        elif self._unpaired_since is None:
            self._unpaired_since = now
        if not self.value:
            if sum(self._recent) >= 2:
                self.value = True
            elif self.value is None and self._recent[-2:] == [False, False]:
                self.value = False
        elif self._unpaired_since is not None and now - self._unpaired_since >= self.lost_s:
            self.value = False
        return self.value


class AvatarMonitor:
    """Consumes one avatar's audio and video tracks into its ``AvatarState``."""

    def __init__(self, state: AvatarState, *, stats_interval_s: float = STATS_INTERVAL_S) -> None:
        self.state = state
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tracks: dict[str, rtc.RemoteTrack] = {}
        self._stats_interval = stats_interval_s
        self._stats_task: asyncio.Task[None] | None = None
        self._jb_prev: dict[str, tuple[float, int]] = {}
        self._sync = ViewerSync()
        self._closed = False
        # each audio chunk (samples, start on the receive clock, arrival) also goes here: the
        # room's turns
        self.on_audio: Callable[[np.ndarray, float, float], None] | None = None

    @property
    def analyzer(self) -> SyncAnalyzer:
        return self.state.analyzer

    def attach(self, track: rtc.RemoteTrack) -> None:
        kind = "video" if track.kind == rtc.TrackKind.KIND_VIDEO else "audio"
        self.detach(kind)
        self._tracks[kind] = track
        coro = self._video(track) if kind == "video" else self._audio(track)
        task = asyncio.get_running_loop().create_task(coro, name=f"syncmon-{kind}")
        task.add_done_callback(lambda t, kind=kind: self._stream_done(kind, t))  # type: ignore[misc]
        self._tasks[kind] = task
        if self._stats_task is None:
            self._stats_task = asyncio.get_running_loop().create_task(self._poll_stats())
            self._stats_task.add_done_callback(lambda t: self._stream_done("stats", t))

    def detach(self, kind: str) -> None:
        task = self._tasks.pop(kind, None)
        if task is not None:
            task.cancel()
            if kind == "video":
                self._finish()
        self._tracks.pop(kind, None)
        self.state.track_up[kind] = False
        self._jb_prev.pop(kind, None)
        if self.analyzer.receiver is not None:
            self.analyzer.receiver.reset(kind)

    def set_muted(self, kind: str, muted: bool) -> None:
        if kind in self._tracks:
            self.state.track_up[kind] = not muted

    def discontinuity(self) -> None:
        """The connection was lost: no interval or window spans the gap."""
        for k in list(self._tasks):
            self.detach(k)  # (the picture's last frames judged first)
        self.analyzer.discontinuity()

    async def aclose(self) -> None:
        if "video" in self._tasks:
            self._finish()
        self._closed = True
        tasks = list(self._tasks.values())
        if self._stats_task is not None:
            tasks.append(self._stats_task)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        self._stats_task = None

    def _finish(self) -> None:
        """The picture ended (the avatar left or unpublished it, the room closed, the
        connection was lost, its task died): the frames its last windows left unjudged are
        judged now. A live frame is judged 0.6-2.6 s after it arrives: a freeze that ran to
        the picture's end lost that much without this. (A monitor that sheds frames does not
        come here: it is short of CPU, and the estimate this costs can wait for the next
        window.)"""
        try:
            self.analyzer.finish()
        except Exception as exc:  # a bug: logged and counted, and the avatar's close goes on
            self.state.count_restart("finish")
            log.error(
                "judging the last frames of an avatar's picture failed (%s: %s)",
                type(exc).__name__,
                exc,
                exc_info=exc,
            )

    def _stream_done(self, kind: str, task: asyncio.Task[None]) -> None:
        """A stream task that died is logged, counted and restarted (its track reported down
        meanwhile): an exception must not leave an avatar half-measured while it looks up."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        self.state.count_restart(kind)
        n = self.state.task_restarts[kind]
        delay = min(RESTART_MAX_S, RESTART_INITIAL_S * 2 ** min(n - 1, 8))
        log.error(
            "avatar %s task failed (%s: %s); restarting in %.1f s",
            kind,
            type(exc).__name__,
            exc,
            delay,
            exc_info=exc,
        )
        if kind == "stats":
            self._stats_task = None
            asyncio.get_running_loop().call_later(delay, self._restart_stats)
            return
        if self._tasks.get(kind) is not task:
            return
        self.state.track_up[kind] = False
        track = self._tracks.get(kind)
        if track is not None:
            asyncio.get_running_loop().call_later(delay, self._restart, kind, track)

    def _restart(self, kind: str, track: rtc.RemoteTrack) -> None:
        if self._closed or self._tracks.get(kind) is not track:
            return  # detached or replaced meanwhile
        self.attach(track)

    def _restart_stats(self) -> None:
        if self._closed or self._stats_task is not None or not self._tracks:
            return
        self._stats_task = asyncio.get_running_loop().create_task(self._poll_stats())
        self._stats_task.add_done_callback(lambda t: self._stream_done("stats", t))

    async def _video(self, track: rtc.RemoteTrack) -> None:
        stream = LumaStream(track, capacity=0)
        started = False
        size = 0
        try:
            async for item in stream:
                if isinstance(item, ValueError):
                    self.state.count_malformed("frame")
                    MALFORMED_LOG.warning(
                        f"frame:{self.state.participant}",
                        "skipping a malformed video frame: %s",
                        item,
                    )
                    continue
                behind = stream.behind_s(item.timestamp_us)
                # the lag when the analysis woke, or more if it grew since without it ever
                # catching up (a monitor steadily behind never sleeps, never wakes)
                if stream.woke() or behind > self.state.backlog_s:
                    self.state.backlog_s = behind
                if behind > MAX_BACKLOG_S:
                    self._shed(stream, behind)
                    del item
                    continue
                luma = item.luma
                if luma.size != size:  # (a layer or resolution switch too)
                    size = luma.size
                    # a 4:2:0 frame's bytes: the allocator keeps a batch of them (heap.py)
                    fit_to_frames(luma.strides[0] * luma.shape[0] * 3 // 2)
                if not started:
                    if is_preroll(luma):
                        continue
                    started = True
                sender_t = None if item.sender_time_us is None else item.sender_time_us / 1e6
                # WebRTC's render time (the decoded frame's arrival plus its timing model's
                # render delay), kept: audio is stamped at its earliest arrival, a 10 ms pull
                # early, so both streams are timed at their presentation edge
                t = item.timestamp_us / 1e6
                self.state.first_frame("video", t)
                event = self.analyzer.add_video(
                    t, luma, frame_id=item.frame_id, sender_time=sender_t
                )
                del item, luma  # the native buffer goes back now, not at the next frame
                if "moving" not in self.state.startup:
                    # known once the mouth is located, seconds after it (on the frames' clock)
                    moving = self.analyzer.content.moving_at
                    if moving is not None:
                        self.state.first_frame("moving", moving)
                if event.interval_s is not None:
                    self.state.frame_interval.observe(event.interval_s)
                self.state.track_up["video"] = True
                self.state.frame_arrived("video")
                await stream.pace()
        finally:
            await stream.aclose()

    def _shed(self, stream: LumaStream, behind: float) -> None:
        """The monitor fell MAX_BACKLOG_S behind the picture: see MAX_BACKLOG_S."""
        shed = stream.shed() + 1  # (and the frame in hand)
        self.state.frames_shed += shed
        self.state.last_shed_at = time.monotonic()
        self.analyzer.discontinuity()
        BEHIND_LOG.warning(
            f"behind:{self.state.room}/{self.state.participant}",
            "%.1f s behind the picture of %s in room %s (the host is short of CPU): shed %d "
            "frames, %d so far; its timing and windows start afresh",
            behind,
            self.state.participant,
            self.state.room,
            shed,
            self.state.frames_shed,
        )

    async def _audio(self, track: rtc.RemoteTrack) -> None:
        stream = audio_stream(track)
        clock = SampleClock(AUDIO_RATE)
        try:
            async for chunk in stream:
                if isinstance(chunk, ValueError):
                    self.state.count_malformed("audio")
                    MALFORMED_LOG.warning(
                        f"audio:{self.state.participant}", "skipping an audio frame: %s", chunk
                    )
                    continue
                x = chunk.samples
                start = clock.chunk(chunk.arrival, x.size)
                if "audio" not in self.state.startup and (sound := np.flatnonzero(x)).size:
                    # the receiver plays exact zeros until the avatar's first sound arrives
                    self.state.first_frame("audio", start + int(sound[0]) / AUDIO_RATE)
                self.analyzer.add_audio(x, start)
                if self.on_audio is not None:
                    self.on_audio(x, start, chunk.arrival)
                self.state.track_up["audio"] = True
                self.state.frame_arrived("audio")
                await stream.pace()
        finally:
            await stream.aclose()

    @staticmethod
    def _stretch_s(ib: Any) -> float:
        """Net seconds NetEq has moved the audio's timeline by: each inserted or concealed
        sample delays what it plays after by one sample period, each removed one advances it."""
        rate = _sample_rate(ib)
        return (
            float(
                ib.inserted_samples_for_deceleration
                + ib.concealed_samples
                - ib.removed_samples_for_acceleration
            )
            / rate
        )

    def _concealment(self, r: RtpStats, ib: Any) -> None:
        """The audio NetEq made up since the last poll, as gaps: stretches of concealment that
        were not silence (a lost or late packet inside speech; the silence it conceals between
        utterances is no gap)."""
        events, concealed = int(ib.concealment_events), int(ib.concealed_samples)
        silent = int(ib.silent_concealed_samples)
        if r.concealed_samples is not None and r.silent_concealed_samples is not None:
            d_loud = (concealed - silent) - (r.concealed_samples - r.silent_concealed_samples)
            d_events = events - (r.concealment_events or 0)
            if d_loud >= 0 and d_events >= 0:  # (a new receiver starts from 0: skip that poll)
                self.analyzer.audio.add_concealment(d_events, d_loud / _sample_rate(ib))
                if d_loud > 0:
                    log.debug(
                        "%s: receiver concealed %.1f ms of speech in %d new events (%.1f ms "
                        "in all)",
                        self.state.participant,
                        1e3 * d_loud / _sample_rate(ib),
                        d_events,
                        1e3 * (concealed - r.concealed_samples) / _sample_rate(ib),
                    )
        else:
            # the first poll: what was made up before it (the stream's start) is not counted
            self.analyzer.audio.add_concealment(0, 0.0)
        r.concealed_samples, r.silent_concealed_samples = concealed, silent
        r.concealment_events = events

    async def _poll_stats(self) -> None:
        await asyncio.sleep(min(1.0, self._stats_interval))
        while True:
            try:
                await self.poll_stats_once()
            except Exception as e:  # one bad poll is not the end of the stats
                self.state.count_restart("stats")
                log.error("stats poll failed (%s: %s)", type(e).__name__, e, exc_info=e)
            await asyncio.sleep(self._stats_interval)

    async def poll_stats_once(self) -> None:
        """Read the subscriber's inbound-rtp stats of both tracks into the state."""
        playout: dict[str, float] = {}
        jb: dict[str, float] = {}
        cumulative: dict[str, tuple[float, int]] = {}
        stretch: float | None = None
        for kind, track in list(self._tracks.items()):
            try:
                stats = await track.get_stats()
            except Exception as e:  # stats are best effort; the stream goes on
                log.debug("get_stats failed for %s: %s", kind, e)
                continue
            for s in stats:
                if not s.HasField("inbound_rtp"):
                    continue
                ib = s.inbound_rtp
                r = self.state.rtp[kind]
                r.jitter_s = float(ib.received.jitter)
                r.packets_lost = int(ib.received.packets_lost)
                if kind == "audio":
                    self._concealment(r, ib.inbound)
                    stretch = self._stretch_s(ib.inbound)
                delay, emitted = (
                    ib.inbound.jitter_buffer_delay,
                    ib.inbound.jitter_buffer_emitted_count,
                )
                cumulative[kind] = (delay, emitted)
                prev = self._jb_prev.get(kind, (0.0, 0))
                self._jb_prev[kind] = (delay, emitted)
                if emitted > prev[1]:
                    # the average over the last poll (over the whole stream at the first)
                    r.jitter_buffer_delay_s = (delay - prev[0]) / (emitted - prev[1])
                    jb[kind] = r.jitter_buffer_delay_s
                if ib.inbound.estimated_playout_timestamp > 0:
                    playout[kind] = ib.inbound.estimated_playout_timestamp / 1000.0
        if len(cumulative) == 2:  # both tracks' stats read: playout stamps say it
            sync = self._sync.reading(len(playout) == 2, time.monotonic())
            if sync is not None and sync != self.analyzer.viewer_sync:
                log.info(
                    "%s: viewers %s",
                    self.state.participant,
                    "lip-sync its audio and video (one stream: sync_streams)"
                    if sync
                    else "play its audio and video as they arrive (two streams)",
                )
                self.analyzer.viewer_sync = sync
        playout_s: float | None = None
        if len(playout) == 2:
            # the sample being played: an older video sample means a late picture
            playout_s = playout["audio"] - playout["video"]
            self.analyzer.playout_source = "estimated_playout_timestamp"
        elif len(jb) == 2:
            # no playout clock (no audio device): the receiver's own contribution
            playout_s = jb["video"] - jb["audio"]
            self.analyzer.playout_source = "jitter_buffer"
        if playout_s is not None:
            self.analyzer.set_offset("playout", playout_s, 1.0)
        # after the stats calls: the poll's time is after every counter it read
        self.analyzer.receiver_poll(
            time.monotonic(),
            video=cumulative.get("video"),
            audio=cumulative.get("audio"),
            stretch_s=stretch,
        )
        rd = self.analyzer.receiver
        assert rd is not None
        log.debug(
            "jitter buffers (ms): last poll %s, audio stretched %s, audio delay %s, bias %s",
            {k: round(v * 1000, 1) for k, v in jb.items()},
            None if stretch is None else round(stretch * 1000, 1),
            None if rd.audio_delay_s is None else round(rd.audio_delay_s * 1000, 1),
            None if rd.bias_s is None else round(rd.bias_s * 1000, 1),
        )
        if playout_s is not None:  # only a new reading: a stale one is not a new observation
            self.state.observe_offset("playout", playout_s)


def _sample_rate(ib: Any) -> float:
    """The rate NetEq's sample counters run at (48 kHz for Opus)."""
    if ib.total_samples_duration > 0 and ib.total_samples_received > 0:
        return float(ib.total_samples_received / ib.total_samples_duration)
    return 48000.0
