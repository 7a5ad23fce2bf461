"""Audio timing marks: how an instrumented avatar tells the monitor when its audio left.

Video frames carry their sender time in FrameMetadata (``user_timestamp``); audio frames carry
nothing. So, once per utterance, the instrumented avatar publishes a small data packet on topic
``syncmon.timing``:

- ``t_audio_us``: sender time at which the utterance's first audio sample left the audio source,
- ``skew_us``: sender time at which the picture of that instant left (the frame generated with
  that first audio) minus ``t_audio_us`` -- the sender's own A/V skew,
- ``frame_id``: that frame's FrameMetadata id,
- ``env``: the RMS envelope of the utterance's first audio, 2.5 ms blocks, so that the monitor
  can find the utterance's start in the audio it received.

The monitor then has, all in one clock each: the video transit ``R_v - S_v`` (its arrival time
minus the frame's ``user_timestamp``) and the audio transit ``R_a - S_a`` (where the envelope
matched minus ``t_audio_us``). Their difference plus the sender skew is the offset; a sender
clock that is seconds off enters both transits and cancels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

TOPIC = "syncmon.timing"
VERSION = 1
ENV_BLOCK_S = 0.0025
ENV_LEN_S = 0.4
MAX_PAYLOAD = 8192


class MarkError(ValueError):
    """A timing mark that cannot be read."""


@dataclass(frozen=True)
class TimingMark:
    seq: int
    t_audio_us: int
    skew_us: int
    frame_id: int
    env: tuple[float, ...]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": VERSION,
                "seq": self.seq,
                "t_audio_us": self.t_audio_us,
                "skew_us": self.skew_us,
                "frame_id": self.frame_id,
                "env": [round(x, 5) for x in self.env],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> TimingMark:
        if len(payload) > MAX_PAYLOAD:
            raise MarkError(f"timing mark of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        try:
            d = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MarkError(f"timing mark is not JSON: {e}") from None
        if not isinstance(d, dict):
            raise MarkError("timing mark is not a JSON object")
        if d.get("v") != VERSION:
            raise MarkError(f"timing mark version {d.get('v')!r}, expected {VERSION}")
        try:
            env = tuple(float(x) for x in d["env"])
            mark = cls(
                seq=int(d["seq"]),
                t_audio_us=int(d["t_audio_us"]),
                skew_us=int(d["skew_us"]),
                frame_id=int(d["frame_id"]),
                env=env,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MarkError(f"timing mark field missing or malformed: {e}") from None
        if len(env) < 8 or not all(np.isfinite(env)):
            raise MarkError(f"timing mark envelope has {len(env)} usable blocks")
        return mark


def envelope(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS of consecutive ``ENV_BLOCK_S`` blocks of mono audio in [-1, 1]."""
    block = max(1, int(round(ENV_BLOCK_S * sample_rate)))
    n = samples.size // block
    if n == 0:
        return np.zeros(0)
    x = samples[: n * block].astype(np.float64).reshape(n, block)
    return np.asarray(np.sqrt(np.mean(x * x, axis=1)))
