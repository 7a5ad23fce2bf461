"""A deterministic speech-like source, and the mouth opening that follows it with zero phase.

Speech is synthesized in code: words of one to four syllables, each syllable a voiced vowel
(glottal pulse train through two formant resonators, f0 with a slow contour) with an
unvoiced onset burst, syllables of irregular length (real speech is not periodic, which keeps the
lip-sync correlation's side peaks low), short pauses between words and longer ones between
phrases. The same seed gives the same samples on every machine.

The mouth opening at time ``t`` is computed from the envelope of the speech *centred* on ``t``
(a symmetric window): it neither leads nor lags the sound, so the reference avatar's lip-sync
truth is exactly the offset that is injected.
"""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

SAMPLE_RATE = 48000
MOUTH_SIGMA_S = 0.020
# formant pairs (Hz) of a few vowels
_VOWELS = ((730, 1090), (270, 2290), (300, 870), (530, 1840), (640, 1190), (490, 1350))


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return np.asarray(lfilter([1.0 - r], a, x))


def synth_phrase(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One phrase: 2-6 words of 1-4 syllables, followed by nothing (the caller adds pauses)."""
    parts: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, 7))):
        for _ in range(int(rng.integers(1, 5))):
            syl = synth_phrase_syllable(rng, sr, attack_s=0.04, tail_s=0.09)
            burst_n = int(float(rng.uniform(0.01, 0.05)) * sr)
            burst = rng.standard_normal(burst_n) * np.linspace(0.15, 0.0, burst_n)
            syl[:burst_n] += burst * float(rng.uniform(0.2, 1.0))
            parts.append(syl)
            parts.append(np.zeros(int(float(rng.uniform(0.0, 0.04)) * sr)))
        parts.append(np.zeros(int(float(rng.uniform(0.06, 0.22)) * sr)))
    return np.concatenate(parts) * 0.5


def _consonant(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A stop (closure then burst), a nasal (low murmur, lips shut) or a fricative (noise
    above 3 kHz, lips narrow) before a vowel: what closes and narrows a viseme mouth."""
    from scipy.signal import butter, sosfilt

    kind = int(rng.integers(3))
    if kind == 0:  # stop: silence, then a short broadband burst
        closure = np.zeros(int(float(rng.uniform(0.03, 0.07)) * sr))
        n = int(float(rng.uniform(0.008, 0.02)) * sr)
        burst = rng.standard_normal(n) * np.linspace(0.4, 0.0, n)
        return np.concatenate([closure, burst])
    n = int(float(rng.uniform(0.06, 0.12)) * sr)
    t = np.arange(n) / sr
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.012)
    if kind == 1:  # nasal murmur: energy below 300 Hz
        f0 = float(rng.uniform(100, 170))
        phase = np.cumsum(np.full(n, f0)) / sr
        pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
        murmur = _resonator(pulses, 250, 60, sr)
        return np.asarray(murmur / (np.max(np.abs(murmur)) + 1e-9) * 0.35 * fade)
    sos = butter(4, (3500, min(7000, 0.45 * sr)), btype="bandpass", fs=sr, output="sos")
    hiss = sosfilt(sos, rng.standard_normal(n))
    return np.asarray(hiss / (np.max(np.abs(hiss)) + 1e-9) * 0.5 * fade)


def synth_phrase_cv(rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """A phrase of consonant-vowel syllables (stops, nasals, fricatives before the vowels)."""
    parts: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, 7))):
        for _ in range(int(rng.integers(1, 5))):
            if rng.random() < 0.75:
                parts.append(_consonant(rng, sr))
            parts.append(synth_phrase_syllable(rng, sr))
        parts.append(np.zeros(int(float(rng.uniform(0.06, 0.22)) * sr)))
    return np.concatenate(parts) * 0.5


def synth_phrase_syllable(
    rng: np.random.Generator, sr: int, *, attack_s: float = 0.03, tail_s: float = 0.07
) -> np.ndarray:
    """One voiced vowel of 110-320 ms: a glottal pulse train with a slow f0 contour through two
    formant resonators, an onset of ``attack_s`` and an exponential release over its last
    ``tail_s``, as a voice fades (a cut to silence is then never natural)."""
    dur = float(rng.uniform(0.11, 0.32))
    n = int(dur * sr)
    t = np.arange(n) / sr
    f0 = float(rng.uniform(105, 190)) * (1 + 0.08 * np.sin(2 * np.pi * t / dur))
    phase = np.cumsum(f0) / sr
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(np.float64)
    f1, f2 = _VOWELS[int(rng.integers(len(_VOWELS)))]
    voiced = _resonator(pulses, f1, 90, sr) + 0.6 * _resonator(pulses, f2, 120, sr)
    attack = min(attack_s, dur / 4)
    release = max(attack, dur - tail_s)
    env = np.minimum(1.0, t / attack) * np.exp(-np.maximum(t - release, 0.0) / 0.015)
    return np.asarray(voiced / (np.max(np.abs(voiced)) + 1e-9) * env * float(rng.uniform(0.55, 1)))


class SpeechSource:
    """An endless deterministic speech signal with the mouth opening that goes with it.

    ``samples(start, n)`` reads any stretch; phrases are generated on demand and forgotten once
    read past, so memory stays bounded for a live avatar that runs for hours. A WAV file given
    by the user is used instead of the synthesizer and loops; a ``script`` is spoken once.

    Thread-safe: a live publisher renders its pictures in a thread of their own while its audio
    is paced on the event loop, both reading this speech. A phrase is synthesized outside the
    lock that reads take, so a reader of what is already there never waits for a synthesis.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        sample_rate: int = SAMPLE_RATE,
        wav: str | Path | None = None,
        phrase_pause_s: tuple[float, float] = (0.25, 0.6),
        level: float = 1.0,
        consonants: bool = False,
        script: np.ndarray | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self._synth = synth_phrase_cv if consonants else synth_phrase
        self._rng = np.random.default_rng(seed)
        self._pause = phrase_pause_s
        self._level = level
        self._loop: np.ndarray | None = None
        if wav is not None:
            self._loop = load_wav(wav, sample_rate)
        # a script (a conversation's one side) is spoken once, then silence
        self._script = None if script is None else np.asarray(script, np.float32)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute sample index of _buf[0]
        self._lock = threading.Lock()  # _buf and _buf_start change together under it
        self._gen_lock = threading.Lock()  # one synthesis at a time, in the rng's order

    def _end(self) -> int:
        with self._lock:
            return self._buf_start + self._buf.size

    def _extend(self) -> None:
        if self._script is not None:
            chunk, self._script = self._script, np.zeros(self.sample_rate, np.float32)
        elif self._loop is not None:
            chunk = self._loop
        else:
            pause = np.zeros(int(float(self._rng.uniform(*self._pause)) * self.sample_rate))
            chunk = np.concatenate([self._synth(self._rng, self.sample_rate), pause])
        chunk = chunk.astype(np.float32) * self._level
        with self._lock:
            self._buf = np.concatenate([self._buf, chunk])

    def _ensure(self, end: int) -> None:
        while self._end() < end:
            with self._gen_lock:
                if self._end() < end:  # another thread may have synthesized it meanwhile
                    self._extend()

    def _read(self, start: int, end: int, *, clip: bool = False) -> tuple[int, np.ndarray]:
        """``(first, samples[first:end])``: ``first`` is ``start``, or with ``clip`` the oldest
        sample kept if ``start`` was released."""
        self._ensure(end)
        with self._lock:
            if clip:
                start = max(start, self._buf_start)
            elif start < self._buf_start:
                raise ValueError(
                    f"sample {start} was already released (oldest kept: {self._buf_start})"
                )
            i = start - self._buf_start
            return start, self._buf[i : i + max(0, end - start)].copy()

    def samples(self, start: int, n: int) -> np.ndarray:
        """Samples ``[start, start + n)`` in [-1, 1] (float32)."""
        return self._read(start, start + n)[1]

    def release_before(self, sample: int) -> None:
        """Forget samples before ``sample`` (keeping a margin for the mouth window)."""
        keep_from = sample - int(0.5 * self.sample_rate)
        with self._lock:
            drop = keep_from - self._buf_start
            if drop > 0:
                self._buf = self._buf[drop:]
                self._buf_start += drop

    def mouth_open(self, t: float) -> float:
        """Mouth opening in [0, 1] for speech instant ``t`` (s), from a window centred on ``t``."""
        if t < 0:
            return 0.0
        sr = self.sample_rate
        half = int(4 * MOUTH_SIGMA_S * sr)
        centre = int(round(t * sr))
        start, x32 = self._read(centre - half, centre + half, clip=True)
        x = x32.astype(np.float64)
        w = np.exp(-0.5 * ((np.arange(start, centre + half) - centre) / (MOUTH_SIGMA_S * sr)) ** 2)
        rms = float(np.sqrt(np.sum(w * x * x) / np.sum(w)))
        return float(np.clip(rms / 0.12, 0.0, 1.0) ** 0.8)


def load_wav(path: str | Path, sample_rate: int) -> np.ndarray:
    """A 16-bit PCM WAV as mono float at ``sample_rate`` (resampled with scipy)."""
    from scipy.signal import resample_poly

    try:
        with wave.open(str(path), "rb") as w:
            ch, width, rate, n = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
            raw = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{path}: not a PCM WAV file ({e})") from e
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM WAV is supported, got {8 * width}-bit")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32).reshape(-1, ch).mean(axis=1) / 32768
    if x.size == 0:
        raise ValueError(f"{path}: the WAV file holds no audio")
    if rate != sample_rate:
        g = np.gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g).astype(np.float32)
    return np.asarray(x, dtype=np.float32)
