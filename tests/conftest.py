from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from syncmon.analysis import AnalyzerConfig, SyncAnalyzer
from syncmon.reference import ReferenceAvatar

ANALYSIS_RATE = 16000


def feed_avatar(avatar: ReferenceAvatar, duration_s: float, **cfg: object) -> SyncAnalyzer:
    """Feed the avatar's frames and audio straight into an analyzer (no codec, no transport).

    Audio goes in 20 ms chunks decimated 48 kHz -> 16 kHz, interleaved with the frames by time.
    """
    an = SyncAnalyzer(AnalyzerConfig(**cfg), audio_rate=ANALYSIS_RATE)  # type: ignore[arg-type]
    sr = avatar.sample_rate
    chunk = int(0.02 * sr)
    pos = 0
    for f in avatar.frames(duration_s):
        while pos < (f.pts + 0.6) * sr and pos < duration_s * sr:
            x = avatar.audio(pos, chunk)
            an.add_audio(x.reshape(-1, 3).mean(axis=1), pos / sr)
            pos += chunk
        an.add_video(f.pts, f.frame.y)
        avatar.speech.release_before(int((f.speech_t - 1.0) * sr))
    return an


@pytest.fixture
def rng() -> Iterator[np.random.Generator]:
    yield np.random.default_rng(1234)
