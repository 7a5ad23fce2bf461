"""A scripted conversation between a user and the reference avatar, with its truth.

The user speaks; the avatar answers each turn after a known delay; once, the user talks over the
avatar, which goes quiet a known time later; once, the user says a short "mm-hm" while the avatar
speaks (a backchannel: no interruption, and nothing to answer). Both voices are synthesized
(``speech.py``), and the truth is taken from their samples: a voice starts at its first sample
and ends at its last one louder than ``EDGE_LEVEL`` (-60 dBFS), a level below every syllable's
body, independent of how the monitor detects speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .speech import SAMPLE_RATE, synth_phrase, synth_phrase_cv

EDGE_LEVEL = 1e-3
LEAD_S = 4.0  # silence before the user's first word (receivers settle their jitter buffers)
PAUSE_S = 1.6  # from the end of the avatar's answer to the user's next turn
INTERRUPT_AT_S = 1.2  # into the avatar's answer the user talks over it
BACKCHANNEL_AT_S = 1.0  # into the avatar's answer the user says "mm-hm"


@dataclass(frozen=True)
class ConversationTruth:
    responses_s: tuple[float, ...]  # user's end of speech -> avatar's onset, per turn
    # each turn's (user's end of speech, avatar's onset), seconds into the script
    turn_edges_s: tuple[tuple[float, float], ...]
    interruption_stops_s: tuple[float, ...]  # user's onset over the avatar -> avatar quiet
    # each interruption's (user's onset, avatar's end of speech), seconds into the script
    interruption_edges_s: tuple[tuple[float, float], ...]
    duration_s: float


def _trim(x: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > EDGE_LEVEL)
    return x[loud[0] : loud[-1] + 1] if loud.size else x[:0]


def _utterance(rng: np.random.Generator, sr: int, phrases: int, cv: bool) -> np.ndarray:
    """``phrases`` phrases with pauses of 0.15-0.3 s between them (a pause inside a turn)."""
    synth = synth_phrase_cv if cv else synth_phrase
    parts: list[np.ndarray] = []
    for i in range(phrases):
        if i:
            parts.append(np.zeros(int(float(rng.uniform(0.15, 0.3)) * sr)))
        parts.append(_trim(synth(rng, sr)))
    return np.concatenate(parts)


def _edges(x: np.ndarray, sr: int) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(x) > EDGE_LEVEL)
    return float(loud[0]) / sr, float(loud[-1] + 1) / sr


def conversation(
    delays_s: tuple[float, ...] = (0.6, 0.9, 1.5),
    *,
    stop_s: float = 0.4,
    seed: int = 5,
    sr: int = SAMPLE_RATE,
    tail_s: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, ConversationTruth]:
    """User and avatar tracks (float32 at ``sr``) and their truth, one answer per delay. The
    avatar's first answer carries a backchannel; its second (with three delays or more) is
    talked over, and the user's words over it are the turn its third answer answers."""
    if not delays_s or min(delays_s) <= 0 or max(delays_s) > 10:
        raise ValueError(f"delays must be in (0, 10] s, got {delays_s}")
    if not 0.05 <= stop_s <= 5:
        raise ValueError(f"stop_s must be in [0.05, 5] s, got {stop_s}")
    rng = np.random.default_rng(seed)
    user: list[tuple[int, np.ndarray]] = []
    avatar: list[tuple[int, np.ndarray]] = []
    pairs: list[tuple[int, int]] = []  # (user part, avatar part) of each turn
    stops: list[tuple[int, int]] = []  # (user part over, avatar part) of each interruption
    t = int(LEAD_S * sr)
    pending: int | None = None  # the user part the next answer answers
    for k, delay in enumerate(delays_s):
        if pending is None:
            user.append((t, _utterance(rng, sr, 2, cv=False)))
            pending = len(user) - 1
        us, ux = user[pending]
        a_start = us + ux.size + int(round(delay * sr))
        interrupt = k == 1 and len(delays_s) > 2
        a = _utterance(rng, sr, 3, cv=True)
        while a.size < int((INTERRUPT_AT_S + stop_s + 1.0) * sr):
            a = np.concatenate([a, np.zeros(int(0.2 * sr)), _utterance(rng, sr, 1, cv=True)])
        avatar.append((a_start, a))
        pairs.append((pending, len(avatar) - 1))
        pending = None
        if k == 0:
            # "mm-hm" while the avatar answers: short, and it talks on through it
            mm = _trim(synth_phrase(rng, sr))[: int(0.25 * sr)].copy()
            _fade_out(mm, sr)
            user.append((a_start + int(BACKCHANNEL_AT_S * sr), _trim(mm)))
        if interrupt:
            # talked over: the avatar goes quiet stop_s after the user starts
            cut = a[: int((INTERRUPT_AT_S + stop_s) * sr)].copy()
            _fade_out(cut, sr)
            avatar[-1] = (a_start, _trim(cut))
            user.append((a_start + int(INTERRUPT_AT_S * sr), _utterance(rng, sr, 2, cv=False)))
            pending = len(user) - 1
            stops.append((pending, len(avatar) - 1))
            t = user[-1][0] + user[-1][1].size
        else:
            t = a_start + avatar[-1][1].size + int(PAUSE_S * sr)
    n = max(s + x.size for s, x in user + avatar) + int(tail_s * sr)
    tracks = [np.zeros(n, np.float32), np.zeros(n, np.float32)]
    for track, parts in zip(tracks, (user, avatar), strict=True):
        for start, x in parts:
            track[start : start + x.size] += x.astype(np.float32)

    def on(part: tuple[int, np.ndarray]) -> float:
        return part[0] / sr + _edges(part[1], sr)[0]

    def off(part: tuple[int, np.ndarray]) -> float:
        return part[0] / sr + _edges(part[1], sr)[1]

    truth = ConversationTruth(
        responses_s=tuple(on(avatar[a]) - off(user[u]) for u, a in pairs),
        turn_edges_s=tuple((off(user[u]), on(avatar[a])) for u, a in pairs),
        interruption_stops_s=tuple(off(avatar[a]) - on(user[u]) for u, a in stops),
        interruption_edges_s=tuple((on(user[u]), off(avatar[a])) for u, a in stops),
        duration_s=n / sr,
    )
    return tracks[0], tracks[1], truth


def _fade_out(x: np.ndarray, sr: int) -> None:
    """A 10 ms fade at the end of ``x`` (in place): a voice cut off still does not click."""
    fade = min(x.size, int(0.010 * sr))
    x[x.size - fade :] *= np.linspace(1.0, 0.0, fade).astype(x.dtype)
