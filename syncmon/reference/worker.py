"""The reference avatar as a livekit-agents avatar worker: ``AvatarRunner`` end to end.

- ``ReferenceAudioReceiver`` stands for the voice agent: it streams the reference speech
  (utterances separated by pauses) ahead of real time, as a TTS does, each utterance closed by an
  ``AudioSegmentEnd``.
- ``ReferenceGenerator`` is a ``VideoGenerator`` as an avatar runtime is: audio in, for every
  1/fps of it a face whose mouth follows that audio (zero phase) and the audio itself out; idle
  frames when there is nothing to say. Its knobs are those of a real runtime: ``input_buffer``
  (chunks accepted before ``push_audio`` waits), ``output_buffer`` (frames rendered ahead, as
  bitHuman's ``output_buffer_size``) and ``generator_delay_ms`` (model latency).
- ``LaggedSynchronizer`` injects a known sender pacing skew: pictures leave the synchronizer
  ``video_lag_ms`` later than they would.

``run_reference_avatar`` joins a room with these and ``AvatarRunner`` (instrumented by
``syncmon.instrument`` when asked).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import (
    AudioReceiver,
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    VideoGenerator,
)

from ..errors import ConnectError
from .face import FaceRenderer
from .speech import MOUTH_SIGMA_S, synth_phrase

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # what avatar runtimes take (bitHuman: 16 kHz)
CHUNK_S = 0.020


@dataclass(frozen=True)
class WorkerProfile:
    """The reference runtime's configuration (see the module doc)."""

    width: int = 640
    height: int = 360
    fps: float = 25.0
    input_buffer: int = 0
    output_buffer: int = 3
    generator_delay_ms: float = 0.0
    video_lag_ms: tuple[float, ...] = (0.0,)  # several: taken in turn, lag_period_s each
    lag_period_s: float = 10.0
    model_offset_ms: float = 0.0  # the model's own lip-sync error: the mouth shows audio this late
    freezes: tuple[tuple[float, float], ...] = ()  # (start s, duration s): no pictures
    drop_rate: float = 0.0  # generated pictures lost at random in the synchronizer
    tts_lead_s: float = 0.5
    pause_s: tuple[float, float] = (0.4, 0.9)
    seed: int = 1


class ReferenceAudioReceiver(AudioReceiver):
    """The reference speech, utterance by utterance, ``lead_s`` ahead of real time."""

    def __init__(self, *, seed: int = 1, lead_s: float = 0.5, pause_s: tuple[float, float]) -> None:
        super().__init__()
        self._rng = np.random.default_rng(seed)
        self._lead = lead_s
        self._pause = pause_s
        self.utterances = 0

    def notify_playback_finished(self, playback_position: float, interrupted: bool) -> None:
        pass

    def notify_playback_started(self) -> None:
        pass

    def __aiter__(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[rtc.AudioFrame | AudioSegmentEnd]:
        n = int(CHUNK_S * SAMPLE_RATE)
        await asyncio.sleep(1.0)  # let the first idle frames out and the monitor subscribe
        while True:
            phrase = synth_phrase(self._rng, SAMPLE_RATE)
            pcm = np.clip(phrase * 32767.0, -32768, 32767).astype(np.int16)
            t0 = time.monotonic()
            for i in range(0, pcm.size - n + 1, n):
                ahead = t0 + i / SAMPLE_RATE - self._lead - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                yield rtc.AudioFrame(pcm[i : i + n].tobytes(), SAMPLE_RATE, 1, n)
            yield AudioSegmentEnd()
            self.utterances += 1
            rest = t0 + pcm.size / SAMPLE_RATE - time.monotonic()
            await asyncio.sleep(max(0.0, rest) + float(self._rng.uniform(*self._pause)))


class ReferenceGenerator(VideoGenerator):
    """A face from the audio pushed in: frame k shows the audio of [k/fps, (k+1)/fps)."""

    def __init__(self, profile: WorkerProfile) -> None:
        self.profile = profile
        self.fps = profile.fps
        self._spf = int(round(SAMPLE_RATE / profile.fps))  # samples per frame
        self._face = FaceRenderer(width=profile.width, height=profile.height, seed=profile.seed)
        self._in: collections.deque[tuple[np.ndarray, float]] = collections.deque()
        self._in_samples = 0
        self._ended = 0  # AudioSegmentEnd received, not yet rendered
        self._space = asyncio.Event()
        self._data = asyncio.Event()
        self._out: asyncio.Queue[tuple[float, tuple[Any, ...]]] = asyncio.Queue(
            maxsize=max(1, profile.output_buffer)
        )
        self._slot = 0
        self._t0 = time.monotonic()
        half = int(4 * MOUTH_SIGMA_S * SAMPLE_RATE)
        shift = int(round(profile.model_offset_ms / 1000.0 * SAMPLE_RATE))
        if not -0.3 * SAMPLE_RATE <= shift <= 0.5 * SAMPLE_RATE:
            raise ValueError(f"model offset {profile.model_offset_ms} ms outside [-300, +500]")
        self._shift = shift  # the mouth shows the audio this many samples before the frame's
        self._look = half + max(0, -shift)
        # audio just before the current chunk (the mouth window, and a late mouth)
        self._history = np.zeros(half + max(0, shift), dtype=np.float32)

    # -- the runtime's queues, for syncmon.instrument --------------------------------------
    def syncmon_queues(self) -> dict[str, tuple[int, int]]:
        return {
            "input": (self._in_samples // self._spf, self.profile.input_buffer),
            "output": (self._out.qsize(), self.profile.output_buffer),
        }

    def syncmon_attributes(self) -> dict[str, Any]:
        p = self.profile
        return {
            "reference.input_buffer": p.input_buffer,
            "reference.output_buffer": p.output_buffer,
            "reference.generator_delay_ms": p.generator_delay_ms,
        }

    # -- VideoGenerator ----------------------------------------------------------------------
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self._in.append((np.zeros(0, dtype=np.float32), time.monotonic()))
            self._ended += 1
            self._data.set()
            return
        cap = self.profile.input_buffer
        while cap and self._in_samples >= cap * self._spf:
            self._space.clear()
            await self._space.wait()
        x = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0
        if frame.num_channels > 1:
            x = x.reshape(-1, frame.num_channels).mean(axis=1)
        self._in.append((x, time.monotonic()))
        self._in_samples += x.size
        self._data.set()

    def clear_buffer(self) -> None:
        self._in.clear()
        self._in_samples = 0
        self._ended = 0
        self._space.set()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        producer = asyncio.get_running_loop().create_task(self._produce())
        try:
            while True:
                due, item = await self._out.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                for x in item:
                    if isinstance(x, rtc.VideoFrame) and self._frozen(due):
                        continue
                    yield x
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    def _frozen(self, due: float) -> bool:
        """An injected freeze: the runtime stalls, no picture is generated."""
        t = due - self._t0
        return any(start <= t < start + d for start, d in self.profile.freezes)

    # -- rendering ---------------------------------------------------------------------------
    def _take(self, n: int) -> tuple[np.ndarray, float, bool]:
        """Up to ``n`` samples of the current utterance, the push time of its first one, and
        whether the utterance ended with them."""
        parts: list[np.ndarray] = []
        got, pushed = 0, time.monotonic()
        first = True
        while self._in and got < n:
            x, t = self._in[0]
            if x.size == 0:  # the segment end marker
                if got == 0:
                    self._in.popleft()
                    self._ended -= 1
                    return np.zeros(0, dtype=np.float32), t, True
                break
            if first:
                pushed, first = t, False
            take = min(n - got, x.size)
            parts.append(x[:take])
            got += take
            if take == x.size:
                self._in.popleft()
            else:
                self._in[0] = (x[take:], t)
        self._in_samples -= got
        self._space.set()
        chunk = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        ended = bool(self._in) and self._in[0][0].size == 0
        return chunk, pushed, ended

    def _available(self) -> int:
        return self._in_samples

    def _mouth(self, chunk: np.ndarray, ahead: np.ndarray) -> float:
        """Mouth opening at the chunk's start -- the frame's media time -- from a Gaussian window
        centred there (zero phase), as the file renderer does for its frames' PTS."""
        x = np.concatenate([self._history, chunk, ahead]).astype(np.float64)
        centre = self._history.size - self._shift
        idx = np.arange(x.size) - centre
        w = np.exp(-0.5 * (idx / (MOUTH_SIGMA_S * SAMPLE_RATE)) ** 2)
        rms = float(np.sqrt(np.sum(w * x * x) / np.sum(w)))
        return float(np.clip(rms / 0.12, 0.0, 1.0) ** 0.8)

    def _peek(self, n: int) -> np.ndarray:
        parts, got = [], 0
        for x, _ in self._in:
            if x.size == 0 or got >= n:
                break
            parts.append(x[: n - got])
            got += parts[-1].size
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def _video(self, mouth: float) -> rtc.VideoFrame:
        f = self._face.render(mouth_open=mouth, scene_t=self._slot / self.fps, slot=self._slot)
        self._slot += 1
        return rtc.VideoFrame(f.width, f.height, rtc.VideoBufferType.I420, f.to_i420().tobytes())

    async def _produce(self) -> None:
        """Render slot after slot on a real-time frame clock, up to ``output_buffer`` ahead.

        As an avatar runtime does: one frame per 1/fps whether speaking or idle, the output
        paced in real time by ``_stream`` (a generator faster than real time would fill the
        synchronizer's queues and skew the sender by their depth).
        """
        spf, delay = self._spf, self.profile.generator_delay_ms / 1000.0
        period = 1.0 / self.fps
        due = time.monotonic()
        while True:
            now = time.monotonic()
            due = max(due + period, now - period)
            if self._ended == 0 and 0 < self._available() < spf + self._look:
                # speech is coming in: wait (a little) for the look-ahead of the mouth window
                self._data.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._data.wait(), max(0.0, due - now))
            if self._available() >= spf or self._ended > 0:
                chunk, pushed, _ = self._take(spf)
                if chunk.size == 0:  # the utterance ended here
                    await self._out.put((due - period, (AudioSegmentEnd(),)))
                    due -= period  # the end takes no slot
                    continue
                if chunk.size < spf:
                    chunk = np.concatenate([chunk, np.zeros(spf - chunk.size, dtype=np.float32)])
                ready = pushed + delay
                if ready > due:
                    await asyncio.sleep(max(0.0, ready - time.monotonic()))
                    due = max(due, ready)
                mouth = self._mouth(chunk, self._peek(self._look))
                self._history = np.concatenate([self._history, chunk])[-self._history.size :]
                pcm = np.clip(chunk * 32767.0, -32768, 32767).astype(np.int16)
                audio = rtc.AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, spf)
                await self._out.put((due, (self._video(mouth), audio)))
            else:
                self._history = np.zeros_like(self._history)
                await self._out.put((due, (self._video(0.0),)))


class LaggedSynchronizer(rtc.AVSynchronizer):
    """An ``AVSynchronizer`` whose pictures leave late: a known sender pacing skew.

    ``lags_s`` are taken in turn, ``period_s`` each, so a test sees the skew change; a share
    ``drop_rate`` of the pictures is lost (after the generator: their frame ids leave gaps).
    """

    def __init__(
        self,
        *,
        lags_s: tuple[float, ...],
        period_s: float = 10.0,
        drop_rate: float = 0.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._drop_rate = drop_rate
        self._rng = np.random.default_rng(seed + 99)
        self.dropped = 0
        self._lags = lags_s
        self._period = period_s
        self._t0 = time.monotonic()
        # (benchmarks read the truth off this line: the host's monotonic clock is shared)
        log.info(
            "video lag schedule: %s ms, %.1f s each, from monotonic %.6f",
            ",".join(f"{1000 * x:g}" for x in lags_s),
            period_s,
            self._t0,
        )
        # unbounded: a frame enters the synchronizer's own queue exactly ``lag_s`` late (the
        # generator upstream is paced by its audio and, when idle, by its own frame clock)
        self._delay_line: collections.deque[tuple[float, rtc.VideoFrame, float | None]] = (
            collections.deque()
        )
        self._queued = asyncio.Event()
        self.lag_drops = 0
        self._mover = asyncio.get_running_loop().create_task(self._move())

    async def push(
        self, frame: rtc.VideoFrame | rtc.AudioFrame, timestamp: float | None = None
    ) -> None:
        if isinstance(frame, rtc.AudioFrame):
            await super().push(frame, timestamp)
            return
        if self._drop_rate > 0 and self._rng.random() < self._drop_rate:
            self.dropped += 1
            return
        now = time.monotonic()
        lag = self._lags[int((now - self._t0) / self._period) % len(self._lags)]
        # a shorter lag than before: the pictures still held for the longer one would hold
        # this one back too (the synchronizer sends at the frame rate, never faster), so they
        # are lost, as a sender that skips ahead loses them (their frame ids leave gaps)
        while self._delay_line and self._delay_line[-1][0] > now + lag:
            self._delay_line.pop()
            self.lag_drops += 1
        self._delay_line.append((now + lag, frame, timestamp))
        self._queued.set()

    async def _move(self) -> None:
        while True:
            while not self._delay_line:
                self._queued.clear()
                await self._queued.wait()
            due, frame, ts = self._delay_line[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.005))
                continue  # (a shorter lag may have emptied the line meanwhile)
            self._delay_line.popleft()
            await self._video_queue.put((frame, ts))

    async def aclose(self) -> None:
        self._mover.cancel()
        await super().aclose()


class ReferenceAvatarRunner(AvatarRunner):
    """``AvatarRunner`` that publishes without waiting for the audio's first subscriber.

    The stock runner awaits ``wait_for_subscription()`` on its audio before it publishes video;
    in production the user subscribes, but a hidden subscriber (the monitor) never resolves it,
    so a room with only the reference avatar and syncmon would stay without video.
    """

    async def _publish_track(self) -> None:
        async with self._lock:
            await self._room_connected_fut
            audio_track = rtc.LocalAudioTrack.create_audio_track("avatar_audio", self._audio_source)
            self._audio_publication = await self._room.local_participant.publish_track(
                audio_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )
            video_track = rtc.LocalVideoTrack.create_video_track("avatar_video", self._video_source)
            self._video_publication = await self._room.local_participant.publish_track(
                video_track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
            )


async def make_runner(room: rtc.Room, profile: WorkerProfile) -> AvatarRunner:
    """An ``AvatarRunner`` with the reference receiver and generator, not started."""
    gen = ReferenceGenerator(profile)
    recv = ReferenceAudioReceiver(
        seed=profile.seed, lead_s=profile.tts_lead_s, pause_s=profile.pause_s
    )
    opts = AvatarOptions(
        video_width=profile.width,
        video_height=profile.height,
        video_fps=profile.fps,
        audio_sample_rate=SAMPLE_RATE,
        audio_channels=1,
    )
    runner = ReferenceAvatarRunner(room, audio_recv=recv, video_gen=gen, options=opts)
    if any(lag > 0 for lag in profile.video_lag_ms) or profile.drop_rate > 0:
        old = runner._av_sync
        runner._av_sync = LaggedSynchronizer(
            lags_s=tuple(lag / 1000.0 for lag in profile.video_lag_ms),
            period_s=profile.lag_period_s,
            drop_rate=profile.drop_rate,
            seed=profile.seed,
            audio_source=runner._audio_source,
            video_source=runner._video_source,
            video_fps=profile.fps,
            video_queue_size_ms=runner._queue_size_ms,
        )
        await old.aclose()
    return runner


async def run_reference_avatar(
    *,
    url: str,
    token: str,
    profile: WorkerProfile,
    duration_s: float | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Join the room, run the instrumented-or-not ``AvatarRunner`` until stopped."""
    room = rtc.Room()
    try:
        await room.connect(url, token)
    except rtc.ConnectError as e:
        raise ConnectError(f"reference avatar cannot connect to {url}: {e.message}") from None
    stop = stop or asyncio.Event()
    runner = await make_runner(room, profile)
    try:
        await runner.start()
        waiter = asyncio.create_task(stop.wait())
        done = asyncio.create_task(runner.wait_for_complete())
        await asyncio.wait([waiter, done], timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
        for t in (waiter, done):
            t.cancel()
    finally:
        with contextlib.suppress(Exception):
            await runner.aclose()
        with contextlib.suppress(Exception):
            await room.disconnect()
