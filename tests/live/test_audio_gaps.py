"""Audio gaps through the real livekit-server: clean synthetic speech (espeak-ng, whose stop
closures and phrase pauses are abrupt digital silence) counts none; audio the publisher never
sends in the middle of words (a stalled pipeline, which the receiver must conceal) counts one
gap per stall."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.signal import resample_poly

from syncmon.reference.localserver import LocalServer

from .conftest import Proc, avatar_report, start_monitor, start_publisher, wait_for

pytestmark = pytest.mark.slow

SR = 48000
SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "I can help you book a table for two at seven o'clock tonight.",
    "Your package was shipped yesterday and should arrive by Thursday afternoon.",
    "Sorry, I did not catch that. Could you repeat the last part please?",
    "The weather today is sunny with a high of twenty four degrees.",
    "Let me check the account details, it will only take a moment.",
    "Thank you for calling, is there anything else I can do for you today?",
)


def espeak(text: str) -> np.ndarray:
    out = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", text],
        capture_output=True,
        check=True,
    ).stdout
    w = wave.open(io.BytesIO(out))
    x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64) / 32768
    return np.asarray(resample_poly(x, SR, w.getframerate()))


def tts_wav(path: Path, seed: int) -> np.ndarray:
    """Sentences of 2-5 s with 1-2 s pauses, 48 kHz mono, written as a 16-bit WAV."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(SR // 2)]
    for s in SENTENCES * 2:
        parts += [espeak(s), np.zeros(int(SR * rng.uniform(1.0, 2.0)))]
    x = np.concatenate(parts)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    return x


def stalls_inside_words(
    x: np.ndarray, start_s: float, every_s: float, durations: tuple[float, ...]
) -> list[tuple[float, float]]:
    """One stall per ``every_s`` from ``start_s``, each where the speech is loud for 40 ms on
    both sides (inside a word), on the publisher's 10 ms frame grid."""
    rms = np.sqrt(np.convolve(x**2, np.ones(SR // 25) / (SR // 25), mode="same"))
    out: list[tuple[float, float]] = []
    for k, d in enumerate(durations):
        t = start_s + k * every_s
        while True:
            i0, i1 = int(t * SR), int((t + d) * SR)
            if rms[i0 - SR // 50] > 0.05 and rms[i1 + SR // 50] > 0.05:
                break
            t = round(t + 0.01, 2)
        assert t < start_s + (k + 1) * every_s - 1.0, "no word to stall in"
        out.append((t, d))
    return out


def test_clean_tts_counts_no_gap_and_each_stall_inside_a_word_counts_one(
    livekit: LocalServer, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    x = tts_wav(tmp_path / "tts.wav", seed=3)
    clean_s = 32.0
    stalls = stalls_inside_words(x, clean_s + 3.0, 7.0, (0.03, 0.06, 0.1, 0.15, 0.2))
    room = "gaps"
    mon = start_monitor(procs, livekit, room)
    args = ["--wav", str(tmp_path / "tts.wav"), "--duration", f"{stalls[-1][0] + 5:.0f}"]
    for t, d in stalls:
        args += ["--audio-stall", f"{t}:{d}"]
    pub = start_publisher(procs, livekit, room, *args)

    def report() -> dict[str, Any] | None:
        return avatar_report(mon.metrics_url, room, "avatar")

    started = time.monotonic()
    wait_for(lambda: (report() or {}).get("content_estimates"), 30)
    # the first clean_s seconds of the stream are clean speech: the workload, not a wait for
    # a condition (the monitor polls the receiver's statistics every 2 s)
    wait_for(lambda: time.monotonic() - started >= clean_s, clean_s + 5)
    clean = report()
    assert clean is not None and clean["audio"]["gap_source"] == "receiver"
    pub.proc.wait(timeout=stalls[-1][0] + 30)

    # the publisher's own late frames (its source has no queue; a loaded machine) may be
    # stalls too -- or the receiver's buffer absorbs them (three 10-20 ms ones did) -- and it
    # says when it sent one
    late = [float(m.group(1)) for m in re.finditer(r"audio frame at ([0-9.]+) s sent", pub.log())]
    unplanned = [t for t in late if not any(s <= t <= s + d + 0.05 for s, d in stalls)]
    assert clean["audio"]["gaps"] <= sum(t < clean_s - 3.0 for t in unplanned), (clean, late)

    def counted() -> object:
        rep = report()
        return rep is not None and rep["audio"]["gaps"] >= len(stalls) - 1

    with contextlib.suppress(AssertionError):  # (then the assertion below says what came)
        wait_for(counted, 15)
    final = report()
    assert final is not None
    audio = final["audio"]
    assert len(stalls) - 1 <= audio["gaps"] <= len(stalls) + len(unplanned) + 1, (
        audio,
        stalls,
        late,
    )
    # what the receiver made up that was not silence: part of each stall (NetEq's expansion
    # fades to silence, and its buffer absorbs the first tens of ms)
    assert 0.0 < audio["gap_seconds"] <= sum(d for _, d in stalls) + 0.05 * len(unplanned)
