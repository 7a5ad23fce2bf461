"""syncmon.instrument on livekit-plugins-bithuman's real local-mode path.

The plugin's ``BithumanGenerator`` and the real ``AsyncBithuman`` class (constructed offline with
its buffer sizes and thread count) are used; only the runtime's rendering is stood in:
``StandInRuntime`` overrides ``push_audio``/``run``/``flush``/``get_first_frame`` because the
real runtime authenticates online and needs a licensed model, neither of which exists here. It
moves audio through the runtime's own ``_in_queue`` and frames through its ``_out_queue``, so the
buffer depths read are those of the real objects, bounded by the configured sizes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from bithuman import AsyncBithuman, AudioChunk, VideoFrame
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, AvatarRunner
from livekit.plugins.bithuman.avatar import BithumanGenerator

from syncmon.instrument import AvatarInstrumentor
from tests.test_instrument import Otel

FPS = 25
SR = 16000
SPF = SR // FPS


class StandInRuntime(AsyncBithuman):  # type: ignore[misc]
    """The real AsyncBithuman with rendering stood in (see the module doc)."""

    async def push_audio(self, data: bytes, sample_rate: int, last_chunk: bool = False) -> None:
        await self._in_queue.put(np.frombuffer(data, dtype=np.int16))

    async def flush(self) -> None:
        await self._in_queue.put(None)

    def interrupt(self) -> None:
        while not self._in_queue.empty():
            self._in_queue.get_nowait()

    def get_first_frame(self) -> np.ndarray:
        return np.zeros((180, 320, 3), dtype=np.uint8)

    async def _render(self) -> None:
        pending = np.zeros(0, dtype=np.int16)
        ended = False
        while True:
            if pending.size < SPF and not ended:
                try:
                    x = self._in_queue.get_nowait()
                except asyncio.QueueEmpty:
                    x = np.zeros(0, dtype=np.int16)
                if x is None:
                    ended = True
                else:
                    pending = np.concatenate([pending, x])
            img = self.get_first_frame()
            if pending.size >= SPF or (ended and pending.size):
                chunk, pending = pending[:SPF], pending[SPF:]
                chunk = np.pad(chunk, (0, SPF - chunk.size))
                img = img + np.uint8(min(255, int(np.abs(chunk).mean() / 40)))
                await self._out_queue.put(VideoFrame(img, AudioChunk(chunk, SR, False)))
            else:
                await self._out_queue.put(VideoFrame(bgr_image=img))
            if ended and pending.size == 0:
                await self._out_queue.put(VideoFrame(end_of_speech=True))
                ended = False

    async def run(self) -> AsyncIterator[VideoFrame]:  # type: ignore[override]
        render = asyncio.get_running_loop().create_task(self._render())
        try:
            t0 = time.monotonic()
            k = 0
            while True:
                f = await self._out_queue.get()
                if f.bgr_image is not None:
                    k += 1
                    wait = t0 + k / FPS - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                yield f
        finally:
            render.cancel()


@pytest.fixture
def otel() -> Any:
    o = Otel()
    inst = AvatarInstrumentor()
    inst.instrument(tracer_provider=o.tp, meter_provider=o.mp, frame_event_every=5)
    yield o
    inst.uninstrument()


def test_bithuman_generator_buffers_threads_and_model(otel: Otel) -> None:
    runtime = StandInRuntime(input_buffer_size=3, output_buffer_size=4, num_threads=2)
    runtime._model_path = "/models/essence-demo.imx"

    async def main() -> None:
        gen = BithumanGenerator(runtime)
        opts = AvatarOptions(
            video_width=320, video_height=180, video_fps=FPS, audio_sample_rate=SR, audio_channels=1
        )
        runner = AvatarRunner(rtc.Room(), audio_recv=None, video_gen=gen, options=opts)  # type: ignore[arg-type]

        async def forward() -> None:
            async for f in gen:
                if not isinstance(f, AudioSegmentEnd):
                    await runner._av_sync.push(f)

        async def speak() -> None:
            rng = np.random.default_rng(3)
            await asyncio.sleep(0.3)
            for _ in range(2):
                for _ in range(30):  # 1.2 s of audio in 40 ms chunks
                    pcm = (rng.standard_normal(SPF) * 3000).astype(np.int16)
                    await gen.push_audio(rtc.AudioFrame(pcm.tobytes(), SR, 1, SPF))
                await gen.push_audio(AudioSegmentEnd())
                await asyncio.sleep(0.5)

        tasks = [asyncio.create_task(forward()), asyncio.create_task(speak())]
        await tasks[1]  # both utterances pushed; then until the runner has ended both
        deadline = time.monotonic() + 10
        while len(utterances()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        otel.collect()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner._av_sync.aclose()

    def utterances() -> list[Any]:
        return [s for s in otel.spans.get_finished_spans() if s.name == "avatar.utterance"]

    asyncio.run(main())
    spans = utterances()
    assert len(spans) == 2
    a = dict(spans[0].attributes or {})
    assert a["syncmon.generator"] == "BithumanGenerator"
    assert a["bithuman.input_buffer_size"] == 3
    assert a["bithuman.output_buffer_size"] == 4
    assert a["bithuman.num_threads"] == 2
    assert a["bithuman.model"] == "essence-demo.imx"
    # 30 speaking frames; an idle one may come before the end marker is read
    assert 30 <= a["syncmon.frames"] <= 32
    caps = {
        p.attributes["queue"]: p.value for p in otel.points("syncmon.agent.runtime_queue_capacity")
    }
    assert caps == {"input": 3, "output": 4}
    depth = {p.attributes["queue"]: p.value for p in otel.points("syncmon.agent.runtime_queue")}
    assert 0 <= depth["input"] <= 3 and 0 <= depth["output"] <= 4
    proc = otel.points("syncmon.agent.processing_time")
    assert proc and proc[0].count >= 50
