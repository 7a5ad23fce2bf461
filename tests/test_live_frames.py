"""The live layer's reading of the SDK's frames: the luma plane in place, the audio samples.

The buffers here are Python-owned memory described by the SDK's own protobuf messages, as the
FFI describes a decoded frame (handle 0: nothing native to drop); the live tests receive real
frames through livekit-server.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import time
import weakref

import numpy as np
import pytest
from livekit.rtc._proto import audio_frame_pb2 as proto_audio
from livekit.rtc._proto import video_frame_pb2 as proto_video
from livekit.rtc._utils import RingQueue

from syncmon.live import avatar
from syncmon.live.avatar import (
    AUDIO_RATE,
    HOLD_S,
    LumaStream,
    StampedAudioStream,
    _Drained,
    _luma_frame,
    audio_samples,
    luma_view,
)

I420 = proto_video.VideoBufferType.I420


def _owned(
    w: int, h: int, seed: int, *, stride: int | None = None, kind: int = I420
) -> tuple[proto_video.OwnedVideoBuffer, np.ndarray, ctypes.Array[ctypes.c_uint8]]:
    """An I420 buffer (luma rows ``stride`` apart, chroma after) as the FFI announces one."""
    stride = stride or w
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 256, (h, w), dtype=np.uint8)
    cw, ch = (w + 1) // 2, (h + 1) // 2
    raw = np.full(stride * h + 2 * cw * ch, 77, np.uint8)  # padding and chroma read as 77
    raw[: stride * h].reshape(h, stride)[:, :w] = y
    mem = (ctypes.c_uint8 * raw.size).from_buffer_copy(raw.tobytes())
    buf = proto_video.OwnedVideoBuffer()
    buf.handle.id = 0
    info = buf.info
    info.type, info.width, info.height = kind, w, h
    info.data_ptr, info.stride = ctypes.addressof(mem), stride
    comp = info.components.add()
    comp.data_ptr, comp.stride, comp.size = ctypes.addressof(mem), stride, stride * h
    return buf, y, mem


@pytest.mark.parametrize(
    ("size", "stride"), [((640, 360), None), ((1280, 720), None), ((321, 179), 336)]
)
def test_luma_view_is_the_frames_y_plane(size: tuple[int, int], stride: int | None) -> None:
    buf, y, _mem = _owned(*size, seed=size[0], stride=stride)
    luma = luma_view(buf)
    assert luma.shape == (size[1], size[0])
    np.testing.assert_array_equal(luma, y)


def _owner(view: np.ndarray) -> object:
    base: object = view
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview)
    return base.obj._syncmon_handle  # type: ignore[attr-defined]


def test_a_view_kept_past_its_frame_keeps_the_native_buffer() -> None:
    buf, y, _mem = _owned(64, 48, seed=3)
    luma = luma_view(buf)
    owner = weakref.ref(_owner(luma))
    corner = luma[:8, :8]
    del luma
    gc.collect()
    assert owner() is not None  # the corner still reads the buffer: its owner is alive
    np.testing.assert_array_equal(corner, y[:8, :8])
    del corner
    assert owner() is None  # the last view gone: the handle is dropped at once


def test_frame_metadata_is_carried() -> None:
    buf, y, _mem = _owned(64, 48, seed=4)
    received = proto_video.VideoFrameReceived()
    received.buffer.CopyFrom(buf)
    received.timestamp_us = 123_456_789
    received.metadata.frame_id = 42
    received.metadata.user_timestamp = 1_700_000_000_000_000
    frame = _luma_frame(received)
    assert not isinstance(frame, ValueError)
    assert (frame.timestamp_us, frame.frame_id, frame.sender_time_us) == (
        123_456_789,
        42,
        1_700_000_000_000_000,
    )
    np.testing.assert_array_equal(frame.luma, y)
    received.ClearField("metadata")
    bare = _luma_frame(received)
    assert not isinstance(bare, ValueError)
    assert (bare.frame_id, bare.sender_time_us) == (None, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: setattr(i, "type", proto_video.VideoBufferType.RGBA), "no luma plane"),
        (lambda i: setattr(i, "width", 0), "is 0x48"),
        (lambda i: setattr(i, "height", 100_000), "is 64x100000"),
        (lambda i: setattr(i.components[0], "data_ptr", 0), "luma plane at 0x0"),
        (lambda i: setattr(i.components[0], "stride", 32), "stride 32"),
    ],
)
def test_a_malformed_buffer_is_named_and_not_read(change, message: str) -> None:  # type: ignore[no-untyped-def]
    buf, _y, _mem = _owned(64, 48, seed=5)
    change(buf.info)
    received = proto_video.VideoFrameReceived()
    received.buffer.CopyFrom(buf)
    item = _luma_frame(received)
    assert isinstance(item, ValueError)
    assert message in str(item)


def _owned_audio(
    pcm: np.ndarray, *, channels: int = 1, rate: int = AUDIO_RATE
) -> tuple[proto_audio.OwnedAudioFrameBuffer, ctypes.Array[ctypes.c_int16]]:
    mem = (ctypes.c_int16 * pcm.size).from_buffer_copy(pcm.tobytes())
    buf = proto_audio.OwnedAudioFrameBuffer()
    buf.handle.id = 0
    buf.info.data_ptr = ctypes.addressof(mem)
    buf.info.num_channels, buf.info.sample_rate = channels, rate
    buf.info.samples_per_channel = pcm.size // channels
    return buf, mem


def test_audio_samples_scale_int16_to_unit_range() -> None:
    pcm = np.array([0, 1, -1, 16384, -16384, 32767, -32768], np.int16)
    buf, _mem = _owned_audio(pcm)
    x = audio_samples(buf)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, pcm.astype(np.float32) / 32768.0)


@pytest.mark.parametrize(
    ("channels", "rate", "n", "message"),
    [
        (2, AUDIO_RATE, 800, "2 channels at 16000 Hz"),
        (1, 48000, 800, "1 channels at 48000 Hz"),
        (1, AUDIO_RATE, 0, "of 0 samples"),
        (1, AUDIO_RATE, 10**9, "of 1000000000 samples"),
    ],
)
def test_an_audio_frame_not_as_asked_is_named_and_not_read(
    channels: int, rate: int, n: int, message: str
) -> None:
    buf, _mem = _owned_audio(np.zeros(1600, np.int16), channels=channels, rate=rate)
    buf.info.samples_per_channel = n
    with pytest.raises(ValueError, match=message):
        audio_samples(buf)


@pytest.mark.parametrize("stream", [LumaStream, StampedAudioStream])
def test_a_stream_tells_when_it_has_nothing_waiting(stream: type) -> None:
    """The batching reads the SDK's own queue: this fails if the SDK changes it."""

    class Probe(_Drained):
        pass

    assert issubclass(stream, _Drained)
    s = Probe()
    s._queue = RingQueue(0)
    assert s.drained()
    s._queue.put(object())
    assert not s.drained()


def test_a_backlog_lets_the_loop_run_every_hold_and_a_drained_stream_sleeps_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Items come without a wait while any are queued: a stream's backlog must still let the
    loop run (the other streams, the audio's arrival stamps, the /metrics scrape)."""

    class Probe(_Drained):
        pass

    s = Probe()
    s._queue = RingQueue(0)
    for _ in range(1000):
        s._queue.put(object())
    monkeypatch.setattr(avatar, "BATCH_S", 0.05)
    items, item_s = 100, 0.002
    done = 0

    async def main() -> tuple[list[int], float]:
        nonlocal done
        seen: list[int] = []  # the items analysed each time the loop ran anything else
        loop = asyncio.get_running_loop()
        handle: asyncio.Handle | None = None

        def other() -> None:  # runs once per pass of the loop, for as long as it is let
            nonlocal handle
            seen.append(done)
            handle = loop.call_soon(other)

        handle = loop.call_soon(other)
        for _ in range(items):  # the analysis of a backlog, item by item
            t = time.monotonic()
            while time.monotonic() - t < item_s:
                pass
            s._queue._queue.popleft()
            done += 1
            await s.pace()
        held = [x for x in seen if x > 0]  # (the first pass ran before any item)
        s._queue._queue.clear()
        t = time.monotonic()
        await s.pace()  # nothing waiting: the batch's sleep
        slept = time.monotonic() - t
        assert handle is not None
        handle.cancel()
        return held, slept

    seen, slept = asyncio.run(main())
    # the loop ran something else after every HOLD_S of work (its items, whatever else the host ran)
    per_hold = HOLD_S / item_s
    assert len(seen) >= 0.8 * items / (per_hold + 2), seen
    assert np.diff([0, *seen]).max() <= per_hold + 2, seen
    assert slept >= 0.05


def test_a_stream_measures_how_far_behind_the_picture_it_is_and_sheds_its_backlog() -> None:
    """The lag is the stream time queued after the frame in hand (whatever the queue's count:
    a burst released by the jitter buffer is not a lag); shedding frees every queued frame."""

    class Probe(_Drained):
        pass

    s = Probe()
    s._queue = RingQueue(0)
    assert s.behind_s(1_000_000) == 0.0  # nothing queued
    planes = [np.zeros((4, 4), np.uint8) for _ in range(30)]
    for k, plane in enumerate(planes):  # 30 frames 40 ms apart after the one at 1 s
        s._queue.put(avatar.LumaFrame(plane, 1_000_000 + 40_000 * (k + 1), None, None))
    assert s.behind_s(1_000_000) == pytest.approx(1.2)
    s._queue.put(ValueError("malformed"))  # an untimed item last: the lag is read before it
    assert s.behind_s(1_000_000) == pytest.approx(1.2)
    alive = [weakref.ref(p) for p in planes]
    del planes, plane
    assert s.shed() == 31 and s.drained()
    gc.collect()
    assert all(r() is None for r in alive)  # the frames went with the queue
    assert s.woke() and not s.woke()  # once after each batch's sleep


def test_a_streams_subscription_is_narrowed_to_its_own_events(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK hands every video stream every video stream's events; narrowed, a stream is
    handed its own only (the SDK's own FfiQueue; this fails if the SDK changes it)."""
    from livekit.rtc._ffi_client import FfiQueue
    from livekit.rtc._proto import ffi_pb2 as proto_ffi

    def of_kind(e: proto_ffi.FfiEvent) -> bool:
        return e.WhichOneof("message") == "video_stream_event"

    def event(kind: str, handle: int) -> proto_ffi.FfiEvent:
        e = proto_ffi.FfiEvent()
        getattr(e, kind).stream_handle = handle
        getattr(e, kind).eos.SetInParent()
        return e

    fq: FfiQueue[proto_ffi.FfiEvent] = FfiQueue()
    loop = asyncio.new_event_loop()
    try:
        mine = fq.subscribe(loop, filter_fn=of_kind)
        other = fq.subscribe(loop, filter_fn=of_kind)
        avatar.own_events_only(mine, "video_stream_event", 7, fq)
        sent = [("video_stream_event", 7), ("video_stream_event", 8), ("audio_stream_event", 7)]
        sent += [("video_stream_event", 7)]
        for kind, handle in sent:
            fq.put(event(kind, handle))

        async def handed_off() -> None:  # the hand-offs into the loop, each put in its queue
            while other.qsize() < 3:
                await asyncio.sleep(0)

        loop.run_until_complete(asyncio.wait_for(handed_off(), timeout=5))
        got = [mine.get_nowait().video_stream_event.stream_handle for _ in range(mine.qsize())]
        assert got == [7, 7]
        assert other.qsize() == 3  # the kind's, as the SDK subscribed it
        # a queue the SDK's list does not hold (a changed SDK): left as it is, said once
        monkey = fq.subscribe(loop, filter_fn=of_kind)
        fq.unsubscribe(monkey)
        monkeypatch.setattr(avatar, "_NARROW_WARNED", False)
        with caplog.at_level("WARNING", logger=avatar.log.name):
            avatar.own_events_only(monkey, "video_stream_event", 7, fq)
        assert "could not be narrowed" in caplog.text
    finally:
        loop.close()
