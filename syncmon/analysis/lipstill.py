"""The lip-still account: a mouth that does not move while the voice speaks, counted.

The content estimator (``lipsync``) judges each frame of its windows once: whether the voice
speaks at it, whether the mouth is still there (the registered face's motion where a face is
seen, else the mouth's following of the voice), whether the frame may be an episode's edge,
and where the face is seen the mouth's change from the frame before. ``StillAccount`` turns
those judgements into the counters (``syncmon_lip_still_seconds_total`` and
``syncmon_lip_still_episodes_total``): runs of still speaking frames, bridged over the voice's
short pauses and over the few frames where what a swinging head leaves in a frozen mouth reads
as motion, longer than the minimum, with the edges that the measures blur into the speech
around them walked back in. It keeps the last few seconds of judged frames, nothing else.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

STILL_SPAN_S = 1.2  # the window over which the mouth must follow the voice, moment by moment
# an episode's edges extend over the speaking frames within this of it whose correlation
# stays below lipsync's STILL_EDGE_CORR (see StillAccount._lead_in)
STILL_EDGE_S = STILL_SPAN_S
# where the face is seen, an episode's edges extend over the frames within FACE_EDGE_S of it
# in which the mouth changes less than FACE_EDGE_CHANGE times its median change over the
# episode (at least FACE_EDGE_MIN): see _edge_limit. FACE_EDGE_S is how far the face's motion
# carries a movement: half its MOTION_SPAN_S (face.py) and twice the high-pass's 80 ms
FACE_EDGE_S = 0.3
FACE_EDGE_CHANGE = 4.0
FACE_EDGE_MIN = 5.0
# a still run short of the counter's minimum is taken with its edges only where its median
# change is under this share of the speaking frames' before it (``_frozen_limit``)
SHORT_FROZEN_RATIO = 0.1
# where the voice resumes after a pause a still run was bridged over, the frames whose change
# decides whether the mouth stayed still through it (``_moves_after_pause``)
RESUME_FRAMES = 4
# ... and only where that change is this many times what the head's motion there would leave
# in a frozen mouth's cells (``_head_leak``)
HEAD_LEAK_MARGIN = 5.0
# a stretch of frames read moving inside a still run, no longer than this, whose change the
# head's leak explains does not end the run (``_head_blip``): the face's motion span
HEAD_BLIP_S = 0.28


@dataclass
class LipStill:
    """A mouth that does not move while the voice speaks: episodes longer than the threshold
    and their speaking seconds (counters), and the run going on now."""

    episodes: int = 0
    seconds: float = 0.0
    run_s: float = 0.0
    last_still_t: float = -np.inf


class StillAccount:
    """The lip-still counters of one stream (``counts``) and the run going on, from the
    frames the estimator judges (``judge``). ``min_s``: the speaking seconds a still run
    needs to be an episode; ``bridge_s``: a pause in the voice shorter than this, through
    which the mouth stays still, does not end a run."""

    def __init__(self, min_s: float, bridge_s: float) -> None:
        self.min_s = min_s
        self.bridge_s = bridge_s
        self.counts = LipStill()
        # the last frame judged: each frame is judged once, by the first window whose measures
        # reach far enough around it
        self.judged_until = -np.inf
        # the last judged frames (time, dt, speaking, may be an episode's edge, the mouth's
        # change where the face is seen or NaN), the start of the still run going on, and until
        # when an episode's trailing edge is still counted (where the face is seen: until when,
        # and below what change)
        self._recent: deque[tuple[float, float, bool, bool, float, float]] = deque()
        self._run_start = -np.inf
        self._tail_until = -np.inf
        self._tail_face: tuple[float, float] | None = None
        # a still run short of the minimum, while its trailing edge is walked: its seconds with
        # its edges so far, until when the edge may go on, and below what change
        self._short: list[float] | None = None
        # the stretches of the run going on read moving where the head left that in a frozen
        # mouth (``_head_blip``)
        self._blips: list[tuple[float, float]] = []
        # the known changes of the speaking frames before the run going on
        self._before = np.zeros(0)

    def reset(self) -> None:
        """The streams were interrupted: the run going on and the frames judged are let go
        (nothing spans the interruption); the counters stay."""
        self.judged_until = -np.inf
        self.counts.run_s = 0.0
        self._recent.clear()
        self._tail_until = -np.inf
        self._tail_face = None
        self._short = None
        self._blips.clear()
        self._before = np.zeros(0)

    def judge(
        self,
        tk: np.ndarray,
        still: np.ndarray,
        edge: np.ndarray,
        speech: np.ndarray,
        margin: tuple[float, float] = (STILL_SPAN_S / 2, STILL_SPAN_S / 2),
        change: np.ndarray | None = None,
        head: np.ndarray | None = None,
    ) -> None:
        """Account the window's new frames: speech (bridged over short pauses) while the
        mouth is ``still``; ``edge``: frames an episode's edges may take in (see _lead_in);
        ``change``: the mouth's change at each frame where the face shows it (NaN elsewhere;
        ``face.mouth_change``), which decides there instead of ``edge``; ``head``: the head's
        speed at each frame where the face shows it (NaN elsewhere), against which the
        mouth's change is judged as the voice resumes.
        A frame is judged once it lies ``margin`` (from the start, from the end) inside the
        window: the measures around it are one-sided nearer the ends."""
        near = speech
        # frames near a gap in the frames (a freeze, a stall: counted as such) are not judged:
        # a picture that does not arrive is not a mouth that does not move
        gaps = np.nonzero(np.diff(tk) > max(0.15, 2.5 * float(np.median(np.diff(tk)))))[0]
        unjudged = np.zeros(tk.size, bool)
        for g in gaps:
            unjudged |= (tk >= tk[g] - STILL_SPAN_S / 2) & (tk <= tk[g + 1] + STILL_SPAN_S / 2)
        inner = (tk >= tk[0] + margin[0]) & (tk <= tk[-1] - margin[1])
        new = np.nonzero(inner & (tk > self.judged_until))[0]
        if new.size == 0:
            return
        self.judged_until = float(tk[new[-1]])
        st = self.counts
        for i in new:
            t = float(tk[i])
            dt = float(tk[i] - tk[i - 1]) if i > 0 else 0.0
            dt = min(dt, 0.2)  # a gap in the frames is not stillness
            chg = np.nan if change is None else float(change[i])
            is_still = bool(still[i])
            if (
                is_still
                and near[i]
                and st.run_s > 0.0
                and self._recent
                and not self._recent[-1][2]
                and self._moves_after_pause(change, head, int(i), int(new[-1]))
            ):
                # the voice resumes after a pause the run was bridged over, and the face
                # shows the mouth moving from there: it did not stay still through the pause
                is_still = False
            elif not is_still and near[i] and st.run_s > 0.0 and not unjudged[i]:
                in_blip = bool(self._blips) and t <= self._blips[-1][1]
                if in_blip or self._head_blip(tk, still, change, head, int(i)):
                    is_still = True
            if self._short is not None and (unjudged[i] or (near[i] and is_still)):
                self._short_done()
            if unjudged[i]:
                st.run_s = 0.0
                self._tail_until = -np.inf
                self._tail_face = None
                self._short = None
            elif near[i] and is_still:
                if st.run_s == 0.0:
                    self._run_start = t
                    self._blips.clear()
                    # (kept: a run longer than ``_recent`` reaches would forget them)
                    self._before = self._speech_changes()
                if st.run_s < self.min_s <= st.run_s + dt:
                    st.episodes += 1
                    st.seconds += st.run_s + dt + self._lead_in()
                elif st.run_s >= self.min_s:
                    st.seconds += dt
                st.run_s += dt
                st.last_still_t = t
                self._tail_until = -np.inf
                self._tail_face = None
            elif near[i] or (t - st.last_still_t > self.bridge_s and not is_still):
                if st.run_s >= self.min_s and near[i]:
                    self._tail_until = st.last_still_t + STILL_EDGE_S
                    limit = self._edge_limit()
                    self._tail_face = (
                        None if limit is None else (st.last_still_t + FACE_EDGE_S, limit)
                    )
                elif st.run_s > 0.0 and near[i] and (limit := self._frozen_limit()) is not None:
                    # a run short of the minimum where the face showed the mouth frozen: its
                    # edges, which the motion's span blurs into it, may make up the rest
                    self._short = [st.run_s + self._lead_in(), st.last_still_t + FACE_EDGE_S, limit]
                # the mouth moved while speaking, or it moved in a pause longer than a breath
                # (a mouth that stays still through a pause is one episode across it)
                st.run_s = 0.0
            if self._short is not None and st.run_s == 0.0:
                total, until, limit = self._short
                if t <= until and not np.isnan(chg) and chg < limit:
                    if near[i]:
                        self._short[0] = total + dt
                else:
                    self._short_done()
            if st.run_s == 0.0 and t <= self._tail_until:
                # the episode's trailing edge: see _lead_in
                if np.isnan(chg) or self._tail_face is None:
                    on_edge = bool(edge[i])
                else:
                    on_edge = t <= self._tail_face[0] and chg < self._tail_face[1]
                if not on_edge:
                    self._tail_until = -np.inf
                    self._tail_face = None
                elif near[i]:
                    st.seconds += dt
            hd = np.nan if head is None else float(head[i])
            self._recent.append((t, dt, bool(near[i] and not unjudged[i]), bool(edge[i]), chg, hd))
        while self._recent and self._recent[0][0] < self.judged_until - 2 * STILL_SPAN_S - 1.0:
            self._recent.popleft()

    def _moves_after_pause(
        self, change: np.ndarray | None, head: np.ndarray | None, i: int, last: int
    ) -> bool:
        """Whether the mouth's change over the first RESUME_FRAMES speaking frames from ``i``
        (their median, where the face shows them) is at or above the still run's edge limit
        (``_edge_limit``) and a tenth of the speech's before the run. A run bridged over a
        pause goes on when the voice resumes with the mouth still; but the face's motion is a
        mean over MOTION_SPAN_S, and a mouth that resumes speaking softly right after a freeze
        reads still by it for a few frames while its change is a speaking mouth's. Two
        freezes of 0.5-0.7 s of speech, each followed by a pause, counted an episode of
        1.04-1.06 s that way (bench_lip_still seed 14, 14003 and 14014). A median: a frozen
        picture's noise spikes now and then, alone.

        And only where that change is HEAD_LEAK_MARGIN times what the head's own motion there
        leaves in a frozen mouth's cells (``_head_leak``): a head that nods with the voice
        moves as it resumes, and on a textured face registration leaves some of that in the
        mouth's cells (hopper's frozen mouths changed 6.7-18 there, against edge limits of
        5-9, and their freezes split: the head's leak predicted 11-17 of it; where the mouth
        did move, its change was 11-94 times the prediction)."""
        if change is None:
            return False
        limit = self._edge_limit()
        before = self._run_changes(before=True)
        ahead = change[i : min(last + 1, i + RESUME_FRAMES)]
        ahead = ahead[~np.isnan(ahead)]
        if limit is None or before.size < 3 or ahead.size < RESUME_FRAMES:
            return False
        # and a tenth of the speech's before the run, as a short run's (``_frozen_limit``):
        # the head, which nods with the voice, moves as it resumes, and on a textured face
        # frozen from the start (no speech to compare with) the frozen mouth's change there
        # read 7-10, over its run's limit of 5
        limit = max(limit, SHORT_FROZEN_RATIO * float(np.median(before)))
        if head is not None:
            speed = head[i : min(last + 1, i + RESUME_FRAMES)]
            by_head = self._head_limit(speed[~np.isnan(speed)])
            if by_head is None:
                # the head moves faster than it did over the run: its leak there is not
                # known (photo 6010's head at 2 px a frame left 233 in a frozen mouth's
                # cells, where its leak measured at 0.2-0.4 px a frame predicted 9)
                return False
            limit = max(limit, by_head)
        return float(np.median(ahead)) >= limit

    def _head_limit(self, speed: np.ndarray) -> float | None:
        """HEAD_LEAK_MARGIN times what the head's motion at the median of ``speed`` (its
        speeds over a few frames) leaves in a frozen mouth's cells (``_head_leak``); 0 where
        it did not move (a head registration never moved, a flat face's, leaks nothing); None
        where its leak at that speed is not known."""
        s = float(np.median(speed)) if speed.size else 0.0
        if s <= 0:
            return 0.0
        leak = self._head_leak(s)
        return None if leak is None else HEAD_LEAK_MARGIN * leak * s * s

    def _head_blip(
        self,
        tk: np.ndarray,
        still: np.ndarray,
        change: np.ndarray | None,
        head: np.ndarray | None,
        i: int,
    ) -> bool:
        """Whether the frames read moving from ``i`` (inside a still run) to the next still
        one are what the head's motion left in a frozen mouth: no longer than HEAD_BLIP_S,
        their mouth's change (median, where the face shows every one) under HEAD_LEAK_MARGIN
        times the head's leak at their speed (``_head_leak``). On a textured face whose head
        swings with the voice, a frozen mouth's motion rises to the level between moving and
        still for a few frames (hopper at 360p30 H.264, bench_lip_still seed 18's 18009: 44-67
        against a level of 42, the head moving 0.8-1.6 px a frame; a speaking mouth there read
        100-270), and split a freeze of 2.7 s into two runs each short of the minimum.
        Adds the stretch to ``_blips``."""
        if change is None or head is None:
            return False
        if self.counts.run_s < self.min_s and self._frozen_limit() is None:
            # (a run short of the minimum the face does not show frozen: a soft syllable
            # read still changes as speech does, and its change over the head's speed is no
            # leak; a run past the minimum is an episode already)
            return False
        ahead = np.nonzero(still[i:])[0]
        if ahead.size == 0:
            return False  # (the stretch runs past the window: not known yet)
        j = i + int(ahead[0])
        if float(tk[j] - tk[i]) > HEAD_BLIP_S:
            return False
        # (over RESUME_FRAMES at least: a frame's change alone is noisy)
        k = max(j, min(tk.size, i + RESUME_FRAMES))
        chg, speed = change[i:k], head[i:k]
        if np.isnan(chg).any() or np.isnan(speed).any():
            return False
        by_head = self._head_limit(speed)
        if by_head is None or float(np.median(chg)) >= by_head:
            return False
        self._blips.append((float(tk[i]), float(tk[j - 1])))
        return True

    def _head_leak(self, speed: float) -> float | None:
        """How much of the head's motion a frozen mouth's cells show: the median over the
        still run's frames of their change over the head's speed squared (a leak of the
        head's motion through registration grows with its square, as the change does with the
        luma's); None unless RESUME_FRAMES of them or more saw the head move at half
        ``speed`` or faster (a registration trails a fast head, and its leak grows faster
        than the square there)."""
        seen = [
            (chg, hd)
            for t, _, _, _, chg, hd in self._recent
            if t >= self._run_start and not np.isnan(chg) and not np.isnan(hd) and hd > 0
        ]
        if sum(hd >= speed / 2 for _, hd in seen) < RESUME_FRAMES:
            return None
        return float(np.median([chg / (hd * hd) for chg, hd in seen]))

    def _frozen_limit(self) -> float | None:
        """``_edge_limit`` of the still run going on, where the face shows it frozen: its
        median change under SHORT_FROZEN_RATIO of the speaking frames' before it (a frozen
        mouth's frames change by the picture's noise, 0.7-25 luma levels squared on the
        lip-still bench, a speaking mouth's by 50-1000 at their median: frozen runs read
        0.002-0.14 of the speech before them there, speaking runs read still 0.15-1.4); else
        None. A soft syllable read still changes as speech does, and its edges, walked against
        its own change, would take in the speaking frames around it (docs/lip-still.md)."""
        limit = self._edge_limit()
        before = self._run_changes(before=True)
        if limit is None or before.size < 3:
            return None
        if float(np.median(self._run_changes())) > SHORT_FROZEN_RATIO * float(np.median(before)):
            return None
        return limit

    def _run_changes(self, before: bool = False) -> np.ndarray:
        """The known changes (where the face showed the mouth) of the still run going on's
        frames (but its stretches the head explained: ``_head_blip``), or ``before``: of the
        speaking frames before it (as far as ``_recent`` went when it started)."""
        if before:
            return self._before
        return np.array(
            [
                chg
                for t, _, _, _, chg, _ in self._recent
                if t >= self._run_start
                and not np.isnan(chg)
                and not any(a <= t <= b for a, b in self._blips)
            ]
        )

    def _speech_changes(self) -> np.ndarray:
        """The known changes of the speaking frames in ``_recent``."""
        return np.array(
            [chg for _, _, speaking, _, chg, _ in self._recent if speaking and not np.isnan(chg)]
        )

    def _short_done(self) -> None:
        """A still run short of the minimum, its edges walked (as an episode's: the frames
        within FACE_EDGE_S whose change stays at the run's own), is an episode if they make up
        the minimum. Where the face shows the mouth, its motion is a mean over MOTION_SPAN_S
        and carries the movement around a freeze 0.15-0.3 s into it, so a freeze with a
        little over the minimum of speech read as a run under it and counted nothing (the
        lip-still bench's seed 5, 5012: 0.93 s still of 1.13 s spoken)."""
        assert self._short is not None
        total = self._short[0]
        self._short = None
        if total >= self.min_s:
            self.counts.episodes += 1
            self.counts.seconds += total

    def _lead_in(self) -> float:
        """The speaking seconds just before an episode that its detection missed.

        A frame is still when its mouth does not follow the voice over the ``STILL_SPAN_S``
        around it, which holds only once most of that span is frozen, and a frozen mouth on a
        nodding head keeps some correlation (what is left of the head in its cells): a
        detected episode starts after the mouth stopped and ends before it moves again. Those
        edges are added back -- the speaking frames within ``STILL_EDGE_S`` of the run whose
        correlation stays low (``STILL_EDGE_CORR``), up to the first that clearly follows the
        voice. (On the lip-still bench, detected episodes went from ~half of their speaking
        seconds to within 0.15-0.6 s of them; clean speech still counts nothing, since only
        an episode already detected is widened.)

        Where the face shows the mouth, its motion is a mean over MOTION_SPAN_S of the
        high-passed picture, which carries the motion around a freeze 0.15-0.3 s into it at
        either end; there the edges are the frames within FACE_EDGE_S whose frame-to-frame
        change (``face.mouth_change``) stays at the episode's own (``_edge_limit``), up to the
        first that changes more: the last movement before the mouth froze, the first after."""
        out = 0.0
        limit = self._edge_limit()
        for t, dt, speaking, edge, chg, _ in reversed(self._recent):
            if t >= self._run_start:
                continue
            if np.isnan(chg) or limit is None:
                if t < self._run_start - STILL_EDGE_S or not edge:
                    break
            elif t < self._run_start - FACE_EDGE_S or chg >= limit:
                break
            if speaking:
                out += dt
        return out

    def _edge_limit(self) -> float | None:
        """The change below which a frame next to the still run going on is one of its edges:
        FACE_EDGE_CHANGE times the run's median change, at least FACE_EDGE_MIN; None where the
        face has not shown the run's mouth. Between frozen frames the change is the picture's
        noise (a median of 0.7-25 luma levels squared on the lip-still bench, now and then ten
        times that where the head moves fast), the movement into and out of a freeze read
        200-19000, and a speaking mouth reads less than the limit for a frame or two as it
        holds a vowel or a closure: the walk stops at the first frame above it, so a noise
        spike cuts an edge short and a slow mouth next to a freeze is taken in, up to
        FACE_EDGE_S. (Eight times the median counted +0.37 and +0.35 s on two clips of the
        bench's seeds 6 and 7 where four times did +0.23 and +0.31, and 0.04-0.10 s more on
        two clips that four times leaves 0.28-0.34 s short; the same elsewhere.)"""
        known = self._run_changes()
        if known.size < 3:
            return None
        return max(FACE_EDGE_MIN, FACE_EDGE_CHANGE * float(np.median(known)))
