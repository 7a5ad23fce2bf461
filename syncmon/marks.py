"""Audio timing marks: how an instrumented avatar tells the monitor when its audio left.

Video frames carry their sender time in FrameMetadata (``user_timestamp``); audio frames carry
nothing. So, once per utterance, the instrumented avatar publishes a small data packet on topic
``syncmon.timing``:

- ``t_audio_us``: sender time at which the utterance's first audio sample left the audio source,
- ``skew_us``: sender time at which the picture of that instant left (the frame generated with
  that first audio) minus ``t_audio_us`` -- the sender's own A/V skew,
- ``frame_id``: that frame's FrameMetadata id,
- ``env``: the RMS envelope of the utterance's first audio, 2.5 ms blocks, so that the monitor
  can find the utterance's start in the audio it received;
- ``exact`` (only when false): the leave time is the earliest the audio can have left, not
  when it did (the sender's skew is then an upper bound; the offset does not depend on it).

A mark may also time a later point of an utterance (the utterance's audio from there on, and the
frame generated with it): ``seq`` is the utterance's number either way.

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
# sane ranges: a mark is input from a room participant, so every field is bounded before any
# arithmetic uses it (an int of 400 digits passed ``int()`` and overflowed a float later on)
MAX_ID = 2**53  # seq and frame_id: exact in a float, years of frames
MAX_TIME_US = 2**53  # sender clock: any monotonic or Unix time in microseconds
MAX_SKEW_US = 10_000_000  # a sender skew of 10 s is no lip-sync any more
MAX_ENV_BLOCKS = 2 * int(round(ENV_LEN_S / ENV_BLOCK_S))
MAX_ENV_VALUE = 2.0  # RMS of audio in [-1, 1], with headroom


def _bounded_int(d: dict[str, object], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MarkError(f"timing mark field {key!r} is missing or not a number")
    if isinstance(v, float) and not (v.is_integer() and lo <= v <= hi):
        raise MarkError(f"timing mark field {key!r} is not an integer in [{lo}, {hi}]")
    if not lo <= v <= hi:
        raise MarkError(f"timing mark field {key!r} is outside [{lo}, {hi}]")
    return int(v)


def _exact(d: dict[str, object]) -> bool:
    v = d.get("exact", True)
    if not isinstance(v, bool):
        raise MarkError("timing mark field 'exact' is not true or false")
    return v


class MarkError(ValueError):
    """A timing mark that cannot be read."""


@dataclass(frozen=True)
class TimingMark:
    seq: int
    t_audio_us: int
    skew_us: int
    frame_id: int
    env: tuple[float, ...]
    exact: bool = True

    def encode(self) -> bytes:
        d: dict[str, object] = {
            "v": VERSION,
            "seq": self.seq,
            "t_audio_us": self.t_audio_us,
            "skew_us": self.skew_us,
            "frame_id": self.frame_id,
            "env": [round(x, 5) for x in self.env],
        }
        if not self.exact:
            d["exact"] = False
        return json.dumps(d, separators=(",", ":")).encode()

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
        raw_env = d.get("env")
        if not isinstance(raw_env, list) or not 8 <= len(raw_env) <= MAX_ENV_BLOCKS:
            raise MarkError(f"timing mark envelope must be a list of 8..{MAX_ENV_BLOCKS} numbers")
        if not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= MAX_ENV_VALUE
            for x in raw_env
        ):
            raise MarkError(f"timing mark envelope holds values outside [0, {MAX_ENV_VALUE}]")
        mark = cls(
            seq=_bounded_int(d, "seq", 0, MAX_ID),
            t_audio_us=_bounded_int(d, "t_audio_us", -MAX_TIME_US, MAX_TIME_US),
            skew_us=_bounded_int(d, "skew_us", -MAX_SKEW_US, MAX_SKEW_US),
            frame_id=_bounded_int(d, "frame_id", 0, MAX_ID),
            env=tuple(float(x) for x in raw_env),
            exact=_exact(d),
        )
        return mark


def envelope(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS of consecutive ``ENV_BLOCK_S`` blocks of mono audio in [-1, 1]."""
    from .analysis.audio import block_rms

    return block_rms(samples, max(1, int(round(ENV_BLOCK_S * sample_rate))))
