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
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from livekit import rtc
from livekit.rtc._ffi_client import FfiClient
from livekit.rtc._proto import ffi_pb2 as proto_ffi
from livekit.rtc._proto import video_frame_pb2 as proto_video

from ..analysis.audio import ANALYSIS_RATE
from ..analysis.clock import SampleClock
from ..analysis.session import SyncAnalyzer
from ..logs import RateLimitedLog
from .state import AvatarState, RtpStats

log = logging.getLogger(__name__)
RESTART_INITIAL_S = 1.0
RESTART_MAX_S = 30.0
# malformed input from a participant: one line per participant and kind a minute
MALFORMED_LOG = RateLimitedLog(log)

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
        return resp.new_video_stream.stream


def luma_of(frame: rtc.VideoFrame) -> np.ndarray:
    """The Y plane of an I420 frame as a (height, width) view, no copy."""
    plane = frame.get_plane(0)
    if plane is None:
        raise ValueError(f"video frame of type {frame.type} has no luma plane")
    w, h = frame.width, frame.height
    arr = np.frombuffer(plane, dtype=np.uint8)
    if arr.size < w * h:
        raise ValueError(f"luma plane holds {arr.size} bytes for a {w}x{h} frame")
    return arr[: (arr.size // h) * h].reshape(h, -1)[:, :w]


def audio_stream(track: rtc.Track) -> rtc.AudioStream:
    """A received voice as the analysis takes it: 16 kHz mono, in 50 ms frames (a fifth of the
    events, each a thread hop into the loop, of 10 ms), unbounded (a frame dropped by syncmon
    would be blamed on the sender)."""
    return rtc.AudioStream(
        track, sample_rate=AUDIO_RATE, num_channels=1, capacity=0, frame_size_ms=AUDIO_FRAME_MS
    )


def samples_of(frame: rtc.AudioFrame) -> np.ndarray:
    """An int16 audio frame as float32 samples in [-1, 1)."""
    return np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0


def is_preroll(luma: np.ndarray) -> bool:
    sub = luma[::8, ::8]
    return float(sub.mean()) < PREROLL_MAX_MEAN and float(sub.std()) < PREROLL_MAX_STD


class AvatarMonitor:
    """Consumes one avatar's audio and video tracks into its ``AvatarState``."""

    def __init__(self, state: AvatarState, *, stats_interval_s: float = STATS_INTERVAL_S) -> None:
        self.state = state
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tracks: dict[str, rtc.RemoteTrack] = {}
        self._stats_interval = stats_interval_s
        self._stats_task: asyncio.Task[None] | None = None
        self._jb_prev: dict[str, tuple[float, int]] = {}
        self._last_sync_reading: bool | None = None
        self._closed = False
        # each audio chunk (samples, start on the receive clock) also goes here: the room's turns
        self.on_audio: Callable[[np.ndarray, float], None] | None = None

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
        self.analyzer.discontinuity()
        for k in list(self._tasks):
            self.detach(k)

    async def aclose(self) -> None:
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
        stream = UnboundedVideoStream(track, capacity=0)
        started = False
        try:
            async for ev in stream:
                try:
                    luma = luma_of(ev.frame)
                except ValueError as e:
                    self.state.count_malformed("frame")
                    MALFORMED_LOG.warning(
                        f"frame:{self.state.participant}", "skipping a malformed video frame: %s", e
                    )
                    continue
                if not started:
                    if is_preroll(luma):
                        continue
                    started = True
                md = ev.metadata
                frame_id = sender_t = None
                if md is not None:
                    if md.HasField("frame_id"):
                        frame_id = int(md.frame_id)
                    if md.HasField("user_timestamp"):
                        sender_t = md.user_timestamp / 1e6
                # WebRTC's render time (the decoded frame's arrival plus its timing model's
                # render delay), kept: audio is stamped at its earliest arrival, a 10 ms pull
                # early, so both streams are timed at their presentation edge
                t = ev.timestamp_us / 1e6
                self.state.first_frame("video", t)
                event = self.analyzer.add_video(t, luma, frame_id=frame_id, sender_time=sender_t)
                if "moving" not in self.state.startup:
                    # known once the mouth is located, seconds after it (on the frames' clock)
                    moving = self.analyzer.content.moving_at
                    if moving is not None:
                        self.state.first_frame("moving", moving)
                if event.interval_s is not None:
                    self.state.frame_interval.observe(event.interval_s)
                self.state.track_up["video"] = True
                self.state.frame_arrived("video")
        finally:
            await stream.aclose()

    async def _audio(self, track: rtc.RemoteTrack) -> None:
        stream = audio_stream(track)
        clock = SampleClock(AUDIO_RATE)
        try:
            async for ev in stream:
                arrival = time.monotonic()
                x = samples_of(ev.frame)
                start = clock.chunk(arrival, x.size)
                if "audio" not in self.state.startup and (sound := np.flatnonzero(x)).size:
                    # the receiver plays exact zeros until the avatar's first sound arrives
                    self.state.first_frame("audio", start + int(sound[0]) / AUDIO_RATE)
                self.analyzer.add_audio(x, start)
                if self.on_audio is not None:
                    self.on_audio(x, start)
                self.state.track_up["audio"] = True
                self.state.frame_arrived("audio")
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
            sync = len(playout) == 2
            # two polls in a row decide (a stamp may read 0 once, e.g. at a track's start)
            last, self._last_sync_reading = self._last_sync_reading, sync
            if sync == last and sync != self.analyzer.viewer_sync:
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
