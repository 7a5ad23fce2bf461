"""Render the reference avatar to a media file with PyAV (H.264/AAC in mp4, VP8/Opus in webm)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from .avatar import ReferenceAvatar, Truth

VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_CHUNK_S = 0.02

_CODECS = {
    ".mp4": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "libopus"),
    ".webm": ("libvpx", "libopus"),
}


@dataclass(frozen=True)
class RenderOptions:
    duration_s: float = 20.0
    video_bitrate: int = 300_000
    audio_rate: int = 48000
    lossless: bool = False  # FFV1 in mkv: exact pictures, for timing truth on decoded frames


def render(
    avatar: ReferenceAvatar,
    path: str | Path,
    options: RenderOptions | None = None,
    *,
    user_voice: np.ndarray | None = None,
    user_as: str = "stream",
) -> Truth:
    """Write ``options.duration_s`` seconds of the avatar to ``path``; returns the ground truth.

    ``user_voice`` (at the avatar's rate): a user's side of a conversation, written as a second
    audio stream (``user_as="stream"``) or as the right channel of a stereo one (``"stereo"``,
    the avatar's voice on the left)."""
    if user_as not in ("stream", "stereo"):
        raise ValueError(f"user_as must be 'stream' or 'stereo', got {user_as!r}")
    opts = options or RenderOptions()
    path = Path(path)
    ext = path.suffix.lower()
    if opts.lossless:
        vcodec, acodec = "ffv1", "libopus"
        if ext != ".mkv":
            raise ValueError(f"lossless rendering needs a .mkv file, got {path.name}")
    elif ext in _CODECS:
        vcodec, acodec = _CODECS[ext]
    else:
        raise ValueError(f"unsupported output {path.name}: use one of {sorted(_CODECS)}")
    sr = opts.audio_rate
    if sr != avatar.sample_rate:
        raise ValueError(f"audio rate {sr} differs from the avatar's {avatar.sample_rate}")

    with av.open(str(path), mode="w") as out:
        vs = out.add_stream(vcodec, rate=int(round(avatar.fps)))
        vs.width, vs.height = avatar.face.width, avatar.face.height
        vs.pix_fmt = "yuv420p"
        vs.time_base = VIDEO_TIME_BASE
        if vcodec == "libx264":
            vs.bit_rate = opts.video_bitrate
            vs.options = {"preset": "veryfast", "bf": "0"}
        elif vcodec == "libvpx":
            vs.bit_rate = opts.video_bitrate
            # libvpx's realtime deadline adapts its effort to the time each frame takes: the
            # same clip rendered on a loaded machine decoded to other pictures (three renders,
            # three pictures). Its "good" deadline at its fastest speed, on one thread, renders
            # the same pictures every time (as fast here); the picture's coarseness is the
            # bitrate's
            vs.options = {"deadline": "good", "cpu-used": "5", "lag-in-frames": "0"}
            vs.codec_context.thread_count = 1
        vs.codec_context.time_base = VIDEO_TIME_BASE
        stereo = user_voice is not None and user_as == "stereo"
        aus = out.add_stream(acodec, rate=sr)
        aus.layout = "stereo" if stereo else "mono"
        uss = None
        if user_voice is not None and not stereo:
            uss = out.add_stream(acodec, rate=sr)
            uss.layout = "mono"
        for st in (aus, uss):
            if st is not None and acodec == "libopus":
                # as WebRTC codes a voice (libwebrtc's Opus runs in its VoIP mode): FFmpeg's
                # default (audio) smears a voice's end into a tail that decays ~1.7 dB per 10 ms
                # from -49 dBFS where it ended, which a recording from a room never has
                st.options = {"application": "voip"}

        def encode(stream: Any, x: np.ndarray, pos: int) -> None:
            pcm = np.clip(x * 32767.0, -32768, 32767).astype(np.int16)
            af = av.AudioFrame.from_ndarray(
                pcm, format="s16p", layout="stereo" if pcm.shape[0] == 2 else "mono"
            )
            af.sample_rate = sr
            af.pts = pos
            af.time_base = Fraction(1, sr)
            for p in stream.encode(af):
                out.mux(p)

        def user_at(pos: int, n: int) -> np.ndarray:
            assert user_voice is not None
            x = np.zeros(n, np.float32)
            part = user_voice[pos : pos + n]
            x[: part.size] = part
            return x

        chunk = int(AUDIO_CHUNK_S * sr)
        audio_pos = 0

        def write_audio_until(t: float) -> None:
            nonlocal audio_pos
            while audio_pos < min(t, opts.duration_s) * sr:
                x = avatar.audio(audio_pos, chunk)[None, :]
                if stereo:
                    x = np.vstack([x, user_at(audio_pos, chunk)[None, :]])
                encode(aus, x, audio_pos)
                if uss is not None:
                    encode(uss, user_at(audio_pos, chunk)[None, :], audio_pos)
                audio_pos += chunk

        last_pts = -1
        for f in avatar.frames(opts.duration_s):
            write_audio_until(f.pts + 0.1)
            vf = av.VideoFrame.from_ndarray(f.frame.to_i420(), format="yuv420p")
            pts = int(round(f.pts / VIDEO_TIME_BASE))
            pts = max(pts, last_pts + 1)
            last_pts = pts
            vf.pts = pts
            vf.time_base = VIDEO_TIME_BASE
            for p in vs.encode(vf):
                out.mux(p)
            avatar.speech.release_before(min(audio_pos, int((f.speech_t - 0.5) * sr)))
        write_audio_until(opts.duration_s)
        for p in vs.encode():
            out.mux(p)
        for st in (aus, uss):
            if st is not None:
                for p in st.encode():
                    out.mux(p)
    return avatar.truth(opts.duration_s)
