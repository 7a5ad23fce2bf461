"""The first picture that moves with the speech: when a stream's avatar started animating.

``ContentOffsetEstimator`` keeps a stream's first frames and envelope (up to MOVING_KEEP_S)
until its mouth is located, then looks back over them (``_find_moving``) with the located
mouth's signal for the first frame from which that mouth moves with the voice
(``moving_onset``): the avatar's start-up (``syncmon_avatar_startup_seconds{stage="moving"}``).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

MOVING_KEEP_S = 30.0  # a stream's frames kept until its mouth is located
MOVING_TRIES = 5  # windows that locate the mouth, each a chance to find where it started
MOVING_BRIDGE_S = 0.3  # a pause shorter than this does not end a stretch of speech
MOVING_STEP_S = 0.25  # steps through a stretch of speech, each a chance to start moving
MOVING_PERSIST = 2  # steps after it (in its stretch) that must move too
MOVING_FOLLOW_S = 1.5  # from a step: the mouth's correlation with the voice over this
MOVING_FOLLOW = 0.3  # ... at least this
MOVING_CONTEXT_S = 0.3  # and before a stretch's onset too (a mouth opening is its clearest)
MOVING_GAIN_S = 0.5  # from a step: the mouth's gain on the voice over this
MOVING_RISE = 0.25  # ... at least this share of the gain where the mouth was located
MOVING_POWER_S = 0.2  # the onset: where the mouth's power over this after steps up most
# against its power over this before: the mouth's state before it (a freeze, a rest), in which
# a frame or two of the first motion, anticipated or blurred by the high-pass, weighs little
MOVING_BEFORE_S = 0.4
MOVING_ONSET_SLACK_S = 0.005  # the envelope's onset is placed to its 10 ms hop
# the lags around the located one at which a step is judged where it does not move with the
# voice at the located lag itself: the mouth was located up to MOVING_KEEP_S after the stream
# began, and a sender can change its offset by then (a starved avatar host whose audio fell
# ~100 ms behind its video a few seconds in: judged at the located lag alone, the first
# seconds did not follow the voice, and the start-up read the first stretch after the change,
# 0.4-7.8 s late). The steps after a step must follow at a lag within MOVING_LAG_HOLD_S of its
# own
MOVING_LAG_S = 0.15
MOVING_LAG_HOLD_S = 0.04
# ... and only on the side of it away from the picture's head where that follows the voice
# over the kept frames (its lag over MOVING_HEAD_LAG_S either side): a photographic mouth held
# shut on a head nodding 220 ms ahead of its voice, through H.264 at 15 fps, followed at -140
# ms with r 0.68-0.75 and the located mouth's gain, step after step. The head leads its voice,
# so a sender whose audio fell behind after the start (the located lag earlier than the first
# seconds') is still found there; one whose audio caught up is judged at the located lag
MOVING_HEAD_LAG_S = 0.4
MOVING_LAGS = np.round(np.arange(-MOVING_HEAD_LAG_S, MOVING_HEAD_LAG_S + 1e-9, 0.01), 3)
MOVING_HEAD_COURSES = 3  # the head: the strongest time courses of the cells above the mouth
# ... and at a lag other than the located one the mouth must move with the voice as the
# located mouth does (its gain at least this share, not MOVING_RISE): the best of many lags
# finds what a frozen mouth keeps of a nodding head (r 0.6-0.7 and 0.4-0.5 of the located
# mouth's gain at -150 ms on a 15 fps cartoon whose head led its voice by 220 ms; r 0.4 and
# 0.2-0.3 at -110 ms on a photographic one; r 0.5-0.57 and 0.3-0.36 at -40 ms on the reference
# cartoon's swaying head), where the mouth itself, at a lag its sender's step moved, moves as
# much as where it was located
MOVING_LAG_RISE = 0.75


def stretches(t: np.ndarray, active: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) of the runs of ``active`` at the times ``t``, joined across pauses
    shorter than MOVING_BRIDGE_S."""
    on = np.concatenate([[False], active, [False]])
    starts = t[np.nonzero(on[1:-1] & ~on[:-2])[0]]
    ends = t[np.nonzero(on[1:-1] & ~on[2:])[0]]
    out: list[tuple[float, float]] = []
    for s0, s1 in zip(starts, ends, strict=True):
        if out and s0 - out[-1][1] < MOVING_BRIDGE_S:
            out[-1] = (out[-1][0], float(s1))
        else:
            out.append((float(s0), float(s1)))
    return out


def _corr(rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The correlation of ``x`` with each of ``rows`` (centred already); -inf where flat."""
    xc = x - np.mean(x)
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(xc)
    return np.where(norms > 0, rows @ xc / np.maximum(norms, 1e-300), -np.inf)


def _gain(m: np.ndarray, e: np.ndarray, sel: np.ndarray) -> float:
    """Least-squares gain of the mouth ``m`` on the voice ``e`` over the frames ``sel``."""
    return float(m[sel] @ e[sel]) / max(1e-12, float(e[sel] @ e[sel]))


def moving_onset(
    t: np.ndarray,
    zero_phase: tuple[np.ndarray, np.ndarray],
    causal_mouth: np.ndarray,
    known: np.ndarray,
    spans: list[tuple[float, float]],
    *,
    cut: bool,
    head: np.ndarray | None = None,
) -> float | None:
    """The first frame time (of ``t``) from which the mouth moves with the voice, or None.
    Signals per frame: (mouth, voice) high-passed ``zero_phase``, the voice at each of
    MOVING_LAGS from the mouth's located lag (lags x frames; or at the located lag alone, one
    row), the mouth high-passed causally, and ``head``: frames x courses of the picture's
    head (high-passed); ``known``: frames where the mouth was located (it moves there);
    ``spans``: the stretches of speech (``stretches``, on the frames' time at the located
    lag).

    Each stretch of speech, in steps of MOVING_STEP_S, is a chance for the mouth
    to start: from a step on, and from the MOVING_PERSIST steps after it too (a mouth that
    started goes on; a chance alignment of a second does not), it must follow the voice
    (correlation over MOVING_FOLLOW_S, with MOVING_CONTEXT_S before a stretch's onset, at
    least MOVING_FOLLOW) and move with it (its gain on the voice over MOVING_GAIN_S at least
    MOVING_RISE of its gain where it was located), at the located lag; or else at the lag
    within MOVING_LAG_S of it (on the side away from the head's) where it follows best,
    moving as the located mouth does (gain at least MOVING_LAG_RISE), the steps after (one
    at least) at lags within MOVING_LAG_HOLD_S of it. Around the first step that does, the
    onset is the frame where the mouth's power over MOVING_POWER_S after it steps up most
    against its power over MOVING_BEFORE_S before, on the causally high-passed mouth: a
    zero-phase filter shows a step a filter's width before it happens. At a stretch's onset
    that is searched from the voice's onset on (the mouth at rest before it; at the step's
    lag), inside a stretch from a step earlier (where a freeze ended).
    ``cut``: frames were dropped from the stream's start, so a mouth already moving with the
    first speech kept began at an unknown time."""
    m, voices = zero_phase
    lags = MOVING_LAGS if voices.ndim == 2 else np.zeros(1)
    voices = voices.reshape(lags.size, -1)
    located = int(np.argmin(np.abs(lags)))
    # (the mouth signal's sign is as the cleaned cells had it; the located window tells which)
    gain = _gain(m, voices[located], known)
    m = m * np.sign(gain)
    gain = abs(gain)
    if gain == 0 or t.size < 3:
        return None
    frame = float(np.median(np.diff(t)))
    half = frame / 2
    power = np.concatenate([[0.0], np.cumsum(causal_mouth**2)])  # running sums
    # the lags another than the located one may be: within MOVING_LAG_S, away from the head's
    searched = np.abs(lags) <= MOVING_LAG_S + 1e-9
    if head is not None and lags.size > 1:
        centred = voices - np.mean(voices, axis=1, keepdims=True)
        rh = np.max([np.abs(_corr(centred, x)) for x in head.T], axis=0)
        kh = int(np.argmax(rh))
        if rh[kh] >= MOVING_FOLLOW and abs(lags[kh]) > MOVING_LAG_HOLD_S + 1e-9:
            searched &= np.sign(lags) != np.sign(lags[kh])

    def moves(c0: float, onset: bool, near: int | None = None) -> tuple[bool, int] | None:
        """Whether the mouth moves with the voice from ``c0``, and at which of ``lags``: at
        the located lag, or where it does not there, at another (within MOVING_LAG_HOLD_S of
        ``near``'s, given another than the located one; see above); None: too little to
        judge."""
        ctx = MOVING_CONTEXT_S if onset else 0.0
        w = (t >= c0 - ctx - half) & (t < c0 + MOVING_FOLLOW_S)
        h = (t >= c0 - half) & (t < c0 + MOVING_GAIN_S)
        if np.count_nonzero(h) < 3 or np.std(m[w]) == 0:
            return None
        ew = voices[:, w] - np.mean(voices[:, w], axis=1, keepdims=True)
        r = _corr(ew, m[w])

        def follows(k: int, rise: float) -> bool:
            g = _gain(m, voices[k], h) / gain
            log.debug(
                "moving onset: from %.2f s after the first picture%s: r %.2f, gain %.2f of "
                "the located, at %+.0f ms from its lag",
                c0 - t[0],
                " (a stretch's onset)" if onset else "",
                r[k],
                g,
                lags[k] * 1000,
            )
            return bool(r[k] >= MOVING_FOLLOW and g >= rise)

        if near is None or near == located:
            if not np.isfinite(r[located]):
                return None
            at_located = follows(located, MOVING_RISE)
            if at_located or near == located:
                return at_located, located
        r[~searched] = -np.inf
        if near is not None:
            r[np.abs(lags - lags[near]) > MOVING_LAG_HOLD_S + 1e-9] = -np.inf
        k = int(np.argmax(r))
        if not np.isfinite(r[k]):
            return None
        return follows(k, MOVING_LAG_RISE), k

    first = True
    for s0, s1 in spans:
        steps = np.arange(max(s0, float(t[0])), min(s1, float(t[-1])), MOVING_STEP_S)
        for j, c0 in enumerate(steps):
            now = moves(c0, c0 == s0)
            if now is None:
                continue
            ok, k = now
            later = [moves(c1, False, k) for c1 in steps[j + 1 : j + 1 + MOVING_PERSIST]]
            # (at another lag than the located one, a step must have a step after it too: a
            # chance alignment on a short stretch is not a lag the sender moved to; through
            # H.264 at 350 kbps a photographic mouth held shut on a nodding head followed at
            # -130 ms with r 0.31 and the located mouth's gain on a stretch of 0.4 s)
            alone = k != located and all(x is None for x in later)
            if not ok or alone or any(x is not None and not x[0] for x in later):
                first = False
                continue
            if first and cut:
                return None
            # (the stretch's onset where the mouth shows it: at the step's own lag)
            at_onset = c0 == s0
            c0 += float(lags[k])
            lo = c0 - (MOVING_ONSET_SLACK_S if at_onset else MOVING_STEP_S)
            ks = np.nonzero((t >= lo) & (t < c0 + MOVING_GAIN_S))[0]
            if ks.size == 0:
                return None
            # where the mouth's motion steps up most: its mean power after against before
            n = max(3, int(round(MOVING_POWER_S / frame)))
            nb = max(3, int(round(MOVING_BEFORE_S / frame)))
            hi, lo_ = np.minimum(ks + n, t.size), np.maximum(ks - nb, 0)
            after = (power[hi] - power[ks]) / np.maximum(hi - ks, 1)
            before = (power[ks] - power[lo_]) / np.maximum(ks - lo_, 1)
            score = np.where(ks > 0, np.log((after + 1e-9) / (before + 1e-9)), np.inf)
            return float(t[ks[int(np.argmax(score))]])
    return None
