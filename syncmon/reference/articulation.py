"""How a talking avatar's face moves with its speech: a viseme-like mouth and prosodic head motion.

Real avatars are not the reference face whose mouth opens with the broadband envelope. What
talking-head models and human talkers do, and what this module renders for the reference avatar
and the test material:

- **Viseme mouth.** The opening follows the energy of the formant band (300-3000 Hz), so it
  closes in stops and nasals (little energy there) and stays narrow on fricatives (their energy
  lies above 3 kHz). The lips are an articulator with a time constant (first-order, 30-55 ms)
  and move ahead of the sound they shape (anticipation, 0-45 ms): the mouth's natural phase
  against the acoustic envelope is not zero. Its width spreads and rounds with the vowel
  (the balance of the upper and lower formant band).
- **Prosodic head motion.** The whole head nods (vertical) and rolls with the 0.5-3 Hz band of
  the speech energy, leading the audio by 100-300 ms, a few pixels at 360p.

Everything is computed from a ``SpeechSource`` on a 10 ms grid of speech time, with non-causal
filters over a bounded window (the avatar knows its speech ahead), so that live rendering costs
a few array lookups per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt, sosfilt_zi

from .speech import SpeechSource

HOP_S = 0.010
# the band-pass of the head motion: a difference of Gaussians passing ~0.5-3 Hz
_HEAD_FAST_S = 0.05
_HEAD_SLOW_S = 0.32


@dataclass(frozen=True)
class ArticulationConfig:
    """The face's articulation; ``None`` for a feature keeps the reference face's behaviour."""

    viseme: bool = True
    tau_s: float = 0.040  # the lips' time constant
    anticipation_s: float = 0.020  # the lips move this much ahead of the sound
    head_px: float = 0.0  # peak nod amplitude at 360p (scaled with the frame height)
    head_roll_deg: float = 0.0  # peak roll
    head_lead_s: float = 0.2  # the head moves this much ahead of the speech energy

    def __post_init__(self) -> None:
        if not 0.0 <= self.tau_s <= 0.2:
            raise ValueError(f"tau_s must be in [0, 0.2], got {self.tau_s}")
        if not -0.1 <= self.anticipation_s <= 0.1:
            raise ValueError(f"anticipation_s must be in [-0.1, 0.1], got {self.anticipation_s}")
        if not 0.0 <= self.head_px <= 20 or not 0.0 <= self.head_roll_deg <= 10:
            raise ValueError("head_px must be in [0, 20] and head_roll_deg in [0, 10]")
        if not 0.0 <= self.head_lead_s <= 0.5:
            raise ValueError(f"head_lead_s must be in [0, 0.5], got {self.head_lead_s}")


@dataclass(frozen=True)
class Pose:
    """The face at one instant: mouth opening and width (0..1, 1 = neutral width), head motion."""

    mouth_open: float
    mouth_width: float
    head_dy: float  # pixels at 360p, positive down
    head_dx: float
    head_roll_deg: float


class Articulator:
    """Mouth and head of a ``SpeechSource`` at any speech time, on a 10 ms grid.

    Features are computed per 10 ms block the first time they are needed and kept for
    ``keep_s``; the speech is read ahead by the filters' support (about 1.5 s).
    """

    def __init__(
        self, speech: SpeechSource, config: ArticulationConfig, *, keep_s: float = 30.0
    ) -> None:
        self.speech = speech
        self.config = config
        sr = speech.sample_rate
        self._block = int(round(HOP_S * sr))
        self._formant = butter(4, (300, 3000), btype="bandpass", fs=sr, output="sos")
        self._low = butter(4, (300, 1200), btype="bandpass", fs=sr, output="sos")
        self._high = butter(4, (1200, 3000), btype="bandpass", fs=sr, output="sos")
        self._zi = {
            k: sosfilt_zi(s) * 0.0
            for k, s in (("f", self._formant), ("l", self._low), ("h", self._high))
        }
        self._keep = int(keep_s / HOP_S)
        self._first = 0  # block index of _feat[0]
        self._feat = np.zeros((0, 4))  # broadband, formant, low, high RMS per block
        self._done = 0  # blocks computed so far (absolute)
        self._mouth_state = 0.0
        self._mouth: list[float] = []  # articulator output per block (absolute index - _first)
        half = int(3 * _HEAD_SLOW_S / HOP_S)
        x = np.arange(-half, half + 1) * HOP_S
        g1 = np.exp(-0.5 * (x / _HEAD_FAST_S) ** 2)
        g2 = np.exp(-0.5 * (x / _HEAD_SLOW_S) ** 2)
        self._head_kernel = g1 / g1.sum() - g2 / g2.sum()
        self._half = half

    # -- features ---------------------------------------------------------------------------
    def _compute_until(self, block: int) -> None:
        """Features of every block up to ``block`` (absolute index), in order."""
        while self._done <= block:
            n = max(1, min(200, block - self._done + 1))
            start = self._done * self._block
            x = self.speech.samples(start, n * self._block).astype(np.float64)
            feats = np.zeros((n, 4))
            for col, (key, sos) in enumerate(
                (("f", self._formant), ("l", self._low), ("h", self._high)), start=1
            ):
                y, self._zi[key] = sosfilt(sos, x, zi=self._zi[key])
                feats[:, col] = np.sqrt(np.mean(y.reshape(n, -1) ** 2, axis=1))
            feats[:, 0] = np.sqrt(np.mean(x.reshape(n, -1) ** 2, axis=1))
            self._feat = np.concatenate([self._feat, feats])
            self._mouth.extend(self._articulate(feats))
            self._done += n
            drop = self._feat.shape[0] - self._keep
            if drop > 0:
                self._feat = self._feat[drop:]
                self._mouth = self._mouth[drop:]
                self._first += drop

    def _articulate(self, feats: np.ndarray) -> list[float]:
        """The lips: target from the formant band, first-order lag of ``tau_s``."""
        target = np.clip(feats[:, 1] / 0.08, 0.0, 1.0) ** 0.7
        a = 1.0 if self.config.tau_s <= 0 else 1.0 - np.exp(-HOP_S / self.config.tau_s)
        out: list[float] = []
        y = self._mouth_state
        for v in target:
            y += a * (float(v) - y)
            out.append(y)
        self._mouth_state = y
        return out

    def _at(self, arr: np.ndarray | list[float], t: float) -> float:
        """Linear interpolation of a per-block series at speech time ``t``."""
        pos = t / HOP_S - 0.5 - self._first
        i = int(np.floor(pos))
        f = pos - i
        if i < 0:
            return float(arr[0]) if len(arr) else 0.0
        if i + 1 >= len(arr):
            return float(arr[-1])
        return float(arr[i]) * (1 - f) + float(arr[i + 1]) * f

    # -- the pose ---------------------------------------------------------------------------
    def pose(self, t: float) -> Pose:
        """The face for speech instant ``t`` (s)."""
        c = self.config
        if t < 0:
            return Pose(0.0, 1.0, 0.0, 0.0, 0.0)
        ahead = t + max(c.anticipation_s, 0.0) + c.head_lead_s + (self._half + 8) * HOP_S
        self._compute_until(int(ahead / HOP_S) + 1)
        if c.viseme:
            opening = self._at(self._mouth, t + c.anticipation_s)
            lo = self._at(self._feat[:, 2], t + c.anticipation_s)
            hi = self._at(self._feat[:, 3], t + c.anticipation_s)
            spread = hi / (lo + hi + 1e-6)  # front vowels spread the lips, back ones round them
            width = 0.85 + 0.35 * spread
        else:
            opening, width = self.speech.mouth_open(t), 1.0
        dy = dx = roll = 0.0
        if c.head_px > 0 or c.head_roll_deg > 0:
            centre = int(round((t + c.head_lead_s) / HOP_S - 0.5)) - self._first
            lo_i, hi_i = centre - self._half, centre + self._half + 1
            if lo_i >= 0 and hi_i <= self._feat.shape[0]:
                env = self._feat[lo_i:hi_i, 0]
                band = float(np.dot(self._head_kernel, env)) / 0.05
                dy = c.head_px * float(np.tanh(band))
                # the roll leads a little more than the nod, so that the two differ
                r0 = lo_i + 6
                env2 = self._feat[r0 : r0 + self._head_kernel.size, 0]
                if env2.size == self._head_kernel.size:
                    roll = c.head_roll_deg * float(np.tanh(np.dot(self._head_kernel, env2) / 0.05))
                dx = 0.3 * c.head_px * float(np.tanh(band * 0.7))
        return Pose(opening, width, dy, dx, roll)
