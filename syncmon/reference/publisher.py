"""Publish the reference avatar into a room, paced in real time, with its impairments.

Audio goes out in 10 ms frames through an ``AudioSource`` with no queue (the SDK then paces the
publisher tightest); frame ``k`` of the schedule is captured at ``t0 + pts_k`` on the same
monotonic clock the audio is paced on, with FrameMetadata (``frame_id`` and ``user_timestamp`` =
the sender's capture time in microseconds). rtc.AVSynchronizer is not used because it paces
video at a fixed rate and drops FrameMetadata, while the schedule needs per-frame send times
for jitter, drops and freezes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.rtc._proto import track_pb2
from livekit.rtc._proto import video_frame_pb2 as proto_video

from ..errors import ConnectError
from .avatar import ReferenceAvatar, VideoOut

log = logging.getLogger(__name__)

AUDIO_FRAME_S = 0.010
START_DELAY_S = 0.5
LATE_AUDIO_S = 0.010  # a frame this late leaves the receiver's buffer short (see _audio)
RENDER_AHEAD = 4  # pictures rendered before they are due (see _video)


class ReferencePublisher:
    """Publishes a ``ReferenceAvatar`` until ``stop()`` or ``duration_s``."""

    def __init__(
        self,
        avatar: ReferenceAvatar,
        *,
        url: str,
        token: str,
        clock_shift_s: float = 0.0,
        audio_start_s: float = 0.0,
        video_start_s: float = 0.0,
        video: bool = True,
        start_at: float | None = None,
    ) -> None:
        if audio_start_s < 0 or video_start_s < 0:
            raise ValueError("audio_start_s and video_start_s must be >= 0")
        self.avatar = avatar
        # a slow avatar start-up: each track sends nothing until this far into the stream (the
        # speech runs on: what is not sent is lost, as from an avatar whose pipeline warms up)
        self.start_s = {"audio": audio_start_s, "video": video_start_s}
        self.joined: float | None = None  # monotonic time the room connection completed
        # monotonic time of each track's first frame handed to its source
        self.first_sent: dict[str, float] = {}
        self.url = url
        self.token = token
        self.clock_shift_s = clock_shift_s  # added to user_timestamp: a sender clock that is off
        self.room: rtc.Room | None = None  # made in run(): a Room binds to the running loop
        self._stop = asyncio.Event()
        self.frames_sent = 0
        self.t0: float | None = None
        self.video = video  # False: a voice only (a conversation's user)
        # monotonic time the stream starts (default: half a second after publishing), so that
        # two publishers in one process share one schedule
        self.start_at = start_at

    def stop(self) -> None:
        self._stop.set()

    async def run(self, duration_s: float | None = None) -> None:
        self.room = rtc.Room()
        try:
            await self.room.connect(self.url, self.token)
        except rtc.ConnectError as e:
            raise ConnectError(f"publisher cannot connect to {self.url}: {e.message}") from None
        self.joined = time.monotonic()
        av = self.avatar
        sr = av.sample_rate
        audio_src = rtc.AudioSource(sr, 1, queue_size_ms=0)
        video_src = rtc.VideoSource(av.face.width, av.face.height)
        await self.room.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("voice", audio_src),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        if self.video:
            await self._publish_video(video_src)
        delay = av.imp.processing_delay_ms / 1000.0
        self.t0 = (self.start_at or time.monotonic() + START_DELAY_S) + delay
        tasks = [asyncio.create_task(self._audio(audio_src, self.t0, duration_s))]
        if self.video:
            tasks.append(asyncio.create_task(self._video(video_src, self.t0, duration_s)))
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if duration_s is not None and not self._stop.is_set():
                await asyncio.wait(tasks)
        finally:
            for t in [*tasks, stop]:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.room.disconnect()
        for r in results:
            if isinstance(r, Exception):
                raise r

    async def _publish_video(self, video_src: rtc.VideoSource) -> None:
        assert self.room is not None
        av = self.avatar
        vopts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False)
        vopts.frame_metadata_features.extend(
            [
                track_pb2.FrameMetadataFeature.FMF_FRAME_ID,
                track_pb2.FrameMetadataFeature.FMF_USER_TIMESTAMP,
            ]
        )
        vopts.video_encoding.max_bitrate = 1_500_000
        vopts.video_encoding.max_framerate = av.fps
        await self.room.local_participant.publish_track(
            rtc.LocalVideoTrack.create_video_track("face", video_src), vopts
        )

    def _sent(self, kind: str, due: float) -> None:
        """A frame of ``kind`` (audio: its first sound) was due to leave at ``due``."""
        if kind not in self.first_sent and self.joined is not None:
            self.first_sent[kind] = due
            # what the start-up test compares the monitor's syncmon_avatar_startup_seconds with
            log.info("startup: first %s frame sent %.3f s after joining", kind, due - self.joined)

    async def _audio(self, src: rtc.AudioSource, t0: float, duration_s: float | None) -> None:
        av = self.avatar
        sr = av.sample_rate
        n = int(AUDIO_FRAME_S * sr)
        pos = int(round(self.start_s["audio"] * sr / n)) * n
        who = self.room.local_participant.identity if self.room is not None else "?"
        late: tuple[float, float] | None = None  # this late stretch: its start, its worst
        try:
            while duration_s is None or pos < duration_s * sr:
                wait = t0 + pos / sr - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if -wait > LATE_AUDIO_S:
                    if late is None:
                        # the source has no queue: the receiver may have had to conceal this
                        # (the truth of a gap count then includes it); once per late stretch
                        log.warning(
                            "audio frame at %.2f s sent %.0f ms late (%s)",
                            pos / sr,
                            -1e3 * wait,
                            who,
                        )
                        late = (pos / sr, -wait)
                    late = (late[0], max(late[1], -wait))
                elif late is not None:
                    _log_late(late, pos / sr, who)
                    late = None
                x = av.audio(pos, n)
                stall = next(
                    (d for s, d in av.imp.audio_stalls if s * sr <= pos < (s + d) * sr), None
                )
                if stall is not None and not any(
                    s * sr <= pos - n < (s + d) * sr for s, d in av.imp.audio_stalls
                ):
                    log.info("audio stalls for %.0f ms at %.2f s", 1e3 * stall, pos / sr)
                if stall is None:
                    pcm = np.clip(x * 32767.0, -32768, 32767).astype(np.int16)
                    await src.capture_frame(rtc.AudioFrame(pcm.tobytes(), sr, 1, n))
                    if (sound := np.flatnonzero(pcm)).size:
                        self._sent("audio", t0 + (pos + int(sound[0])) / sr)
                pos += n
                av.speech.release_before(pos - int((1.0 + abs(av.imp.offset_ms) / 1000) * sr))
        finally:
            if late is not None:  # a stretch still late when the audio ended or was stopped
                _log_late(late, pos / sr, who)

    async def _video(self, src: rtc.VideoSource, t0: float, duration_s: float | None) -> None:
        # pictures are rendered in a thread of their own, up to RENDER_AHEAD frames before they
        # are due: a viseme mouth on a nodding head costs 5-25 ms a frame and a phrase of speech
        # synthesized for it more, which on this loop sent the audio frames late (the receiver's
        # jitter buffer then stretches, and what a viewer plays drifts from what is sent)
        loop = asyncio.get_running_loop()
        render = _Renderer(self.avatar, duration_s, self.start_s["video"])
        pool = ThreadPoolExecutor(1, thread_name_prefix="syncmon-render")
        ahead: deque[asyncio.Future[_Picture | None]] = deque(
            loop.run_in_executor(pool, render.next) for _ in range(RENDER_AHEAD)
        )
        try:
            while (p := await ahead.popleft()) is not None:
                ahead.append(loop.run_in_executor(pool, render.next))
                wait = t0 + p.out.pts - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                frame = rtc.VideoFrame(
                    p.out.frame.width, p.out.frame.height, proto_video.VideoBufferType.I420, p.i420
                )
                sent_us = int((time.time() + self.clock_shift_s) * 1e6)
                md = proto_video.FrameMetadata(frame_id=p.out.frame_id, user_timestamp=sent_us)
                src.capture_frame(frame, timestamp_us=int(time.monotonic() * 1e6), metadata=md)
                self.frames_sent += 1
                self._sent("video", t0 + p.out.pts)
                if p.moving:
                    self._sent("moving", t0 + p.out.pts)
        finally:
            render.stop()
            for f in ahead:  # renders nobody will send (a stop, a failure)
                f.cancel()
            pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class _Picture:
    out: VideoOut
    i420: bytes  # the frame as the VideoSource takes it
    moving: bool  # the first frame to show the mouth moving with the speech (start-up's truth)


class _Renderer:
    """The avatar's frames one by one, from ``start_s`` on, for the render thread."""

    def __init__(self, avatar: ReferenceAvatar, duration_s: float | None, start_s: float):
        self._avatar = avatar
        self._frames = avatar.frames(duration_s)
        self._start_s = start_s
        self._stopped = False
        self._moved = False  # a frame showed the mouth moving (start-up needs only the first)

    def stop(self) -> None:
        self._stopped = True

    def next(self) -> _Picture | None:
        av = self._avatar
        while not self._stopped:
            f = next(self._frames, None)
            if f is None:
                return None
            if f.pts < self._start_s:
                continue
            moving = not self._moved and av.mouth_moves(f.speech_t)
            self._moved = self._moved or moving
            return _Picture(f, f.frame.to_i420().tobytes(), moving)
        return None


def _log_late(late: tuple[float, float], until_s: float, who: str) -> None:
    """One late-sent audio stretch (its start and worst lateness), up to ``until_s``: what a
    truth on the script's timeline must allow for (the conversation's turns)."""
    log.info(
        "audio late from %.2f to %.2f s, at most %.0f ms (%s)", late[0], until_s, 1e3 * late[1], who
    )
