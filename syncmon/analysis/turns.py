"""Turns from the room's media: how long after a user stops talking the avatar answers, and how
fast it goes quiet when talked over.

Everything here is measured on received audio, at the monitor (the SFU's vantage): the users'
audio and the avatar's, each on the receiver's own clock (``analysis.clock``). Each stream's
edges are then taken back by that stream's own jitter-buffer delay in the monitor (``delay_s``,
from its stats), to when its audio reached the monitor: two NetEq buffers of one receiver settle
10-40 ms apart, and one measured run held a user's audio 90 ms longer than the avatar's for a
whole conversation. Against the sender's script (``reference.conversation``, through the real
livekit-server) the edges then reach the monitor 0-17 ms after they were sent, both sides alike.

**Voice activity** (``VoiceActivity``) is energy-based on 10 ms blocks, against a noise floor
tracked per stream (the minimum block level over the last ``FLOOR_WINDOW_S``): a block is loud
above ``max(ABS_ON_DBFS, floor + ON_DB)``, and speech goes on while blocks stay above
``max(ABS_OFF_DBFS, floor + OFF_DB)``. A segment starts at the first block of the loud run that
crossed the start level (backtracked to where its level first rose above the lower one) and ends
at the end of its last block above the lower level, both edges placed to a quarter block (2.5 ms)
inside the block where they fall; silences shorter than ``HANG_S`` (stops,
breaths, the pauses between words) do not end it, and a segment with less than ``MIN_SPEECH_S``
of loud blocks (a click, a cough's edge) is not speech. Why not a model: the answers needed here
are *times*, to a block: WebRTC's GMM VAD (py-webrtcvad) holds its decision up to 8 frames after
speech ends (its hangover), which would move every end of turn by tens of milliseconds, and a
neural VAD (Silero) decides on 32 ms windows at the cost of an inference runtime per user; the
audio of a LiveKit room is close-talk speech after WebRTC's own noise suppression, where the
level separates speech from the rest.

**Turns** (``Turns``, one per room): a response is the first onset of an avatar's voice after the
end of a user's speech, when no user is speaking at that onset, within ``MAX_RESPONSE_S``; a
user's speech that ended while an avatar spoke (a backchannel, an interruption) awaits no answer.
An interruption is a user's onset while an avatar speaks, at least ``INTERRUPT_AFTER_S`` after
the avatar started (two voices starting together is crosstalk), of speech that lasts
``INTERRUPT_MIN_S`` (a backchannel does not interrupt); its stop time is from that onset
to the end of the avatar's voice, or none when it spoke on for ``STOP_MAX_S``. Decisions wait
until every stream has been heard past the time they concern (plus ``HANG_S``): a user whose
audio stops arriving (muted, gone) counts as silent after ``STALE_S``.

Only segment times are kept, never audio, and only for ``KEEP_S``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

BLOCK_S = 0.010
SUBS = 4  # an edge is placed to a quarter block (2.5 ms) inside the block where it falls
SUB_S = BLOCK_S / SUBS
ABS_ON_DBFS = -50.0
ABS_OFF_DBFS = -70.0
ON_DB = 15.0
OFF_DB = 6.0
FLOOR_WINDOW_S = 5.0
FLOOR_MIN_DBFS = -100.0
HANG_S = 0.35
MIN_SPEECH_S = 0.10
BACKTRACK_BLOCKS = 8
DISCONTINUITY_S = 0.050

MAX_RESPONSE_S = 15.0
INTERRUPT_AFTER_S = 0.3
# a user's speech over the avatar interrupts once it is this long: livekit-agents' own
# min_interruption_duration (a shorter "mm-hm" is a backchannel an agent rightly talks on through)
INTERRUPT_MIN_S = 0.5
STOP_MAX_S = 10.0
STALE_S = 1.0
KEEP_S = 60.0
MAX_USERS = 16  # per room: more humans than this are not followed (logged by the caller)


def _db(power: np.ndarray) -> np.ndarray:
    return np.asarray(10.0 * np.log10(np.maximum(power, 1e-10)))


@dataclass
class Segment:
    """A stretch of speech on one stream (``end`` None while it goes on)."""

    start: float
    end: float | None = None
    loud_s: float = 0.0  # of its blocks above the lower level
    answered: bool = False  # user segment: its end was answered or needs no answer
    checked: bool = False  # avatar segment: its onset was judged as a response or not
    interrupt_done: bool = False  # avatar segment: its interruption (if any) was judged


class VoiceActivity:
    """Speech segments of one mono stream (float samples in [-1, 1], timed chunks)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._block = int(round(BLOCK_S * sample_rate))
        self._pending = np.zeros(0, np.float32)
        self._next_t: float | None = None  # time of _pending[0]
        self._floor_win: deque[tuple[int, float]] = deque()  # monotonic min over blocks
        self._n = 0
        # (t, dB, sub-block dBs) of the last blocks
        self._recent: deque[tuple[float, float, np.ndarray]] = deque(maxlen=BACKTRACK_BLOCKS)
        self.segments: deque[Segment] = deque()
        self._open: Segment | None = None
        self._last_loud_end = 0.0
        self.heard_until = -np.inf  # end of the last block processed
        # the receiver's jitter-buffer delay (a live monitor): edges are taken back by it
        self.delay_s = 0.0
        self.arrived_at = -np.inf  # wall (monotonic) time of the last chunk

    @property
    def speaking(self) -> Segment | None:
        """The segment going on, once it is speech (MIN_SPEECH_S loud)."""
        return self._open if self._open is not None and self._open.loud_s >= MIN_SPEECH_S else None

    def decided_until(self, now: float) -> float:
        """Time up to which this stream's segments are final (silent after STALE_S)."""
        if now - self.arrived_at > STALE_S and self._open is None:
            return now - STALE_S
        return self.heard_until - HANG_S

    def add(self, x: np.ndarray, start: float, now: float) -> None:
        self.arrived_at = now
        if self._next_t is None or abs(start - self._next_t) > DISCONTINUITY_S:
            # a new stream or a jump of its clock: blocks are not carried across it
            self._pending = np.zeros(0, np.float32)
            self._next_t = start
        buf = np.concatenate([self._pending, np.asarray(x, np.float32)])
        nb = buf.size // self._block
        if nb:
            sq = buf[: nb * self._block].astype(np.float64) ** 2
            subs = _db(np.mean(sq.reshape(nb, SUBS, -1), axis=2))
            levels = _db(np.mean(sq.reshape(nb, -1), axis=1))
            t0 = self._next_t - self._pending.size / self.sample_rate
            for i, db in enumerate(levels):
                self._block_at(t0 + i * BLOCK_S, float(db), subs[i])
        self._pending = buf[nb * self._block :]
        self._next_t = start + np.asarray(x).size / self.sample_rate

    def _floor(self, db: float) -> float:
        self._n += 1
        win = self._floor_win
        while win and win[-1][1] >= db:
            win.pop()
        win.append((self._n, db))
        while win[0][0] <= self._n - int(FLOOR_WINDOW_S / BLOCK_S):
            win.popleft()
        return max(FLOOR_MIN_DBFS, win[0][1])

    def _block_at(self, t: float, db: float, subs: np.ndarray) -> None:
        floor = self._floor(db)
        on = max(ABS_ON_DBFS, floor + ON_DB)
        off = max(ABS_OFF_DBFS, floor + OFF_DB)
        end = t + BLOCK_S
        self.heard_until = end
        if self._open is None:
            if db >= on:
                # backtrack over the rise: the blocks just before that were above the lower level
                start, first = t, subs
                for bt, bdb, bsubs in reversed(self._recent):
                    if bdb < off or start - bt > BLOCK_S * 1.5:
                        break
                    start, first = bt, bsubs
                loud = np.flatnonzero(first >= off)
                edge = start + (SUB_S * int(loud[0]) if loud.size else 0.0)
                self._open = Segment(edge - self.delay_s, loud_s=(t - start) + BLOCK_S)
                self._last_loud_end = self._loud_end(t, subs, off)
                self.segments.append(self._open)
        elif db >= off:
            self._open.loud_s += BLOCK_S
            self._last_loud_end = self._loud_end(t, subs, off)
        elif end - self._last_loud_end >= HANG_S:
            seg = self._open
            self._open = None
            if seg.loud_s >= MIN_SPEECH_S:
                seg.end = self._last_loud_end - self.delay_s
            else:
                self.segments.remove(seg)  # not speech
        self._recent.append((t, db, subs))
        while self.segments and self.segments[0].end is not None:
            if self.segments[0].end >= end - KEEP_S:
                break
            self.segments.popleft()

    @staticmethod
    def _loud_end(t: float, subs: np.ndarray, off: float) -> float:
        """The end of a loud block's last sub-block above ``off`` (its end if none is)."""
        loud = np.flatnonzero(subs >= off)
        return t + (SUB_S * (int(loud[-1]) + 1) if loud.size else BLOCK_S)

    def confirmed(self) -> list[Segment]:
        """Segments that are speech: ended ones and the one going on once it is speech."""
        out = [s for s in self.segments if s.end is not None]
        if (sp := self.speaking) is not None:
            out.append(sp)
        return out


@dataclass(frozen=True)
class Response:
    avatar: str
    seconds: float
    user_end: float
    onset: float


@dataclass(frozen=True)
class Interruption:
    avatar: str
    user_onset: float
    stop_s: float | None  # None: the avatar spoke on for STOP_MAX_S


@dataclass
class Turns:
    """The turns of one room (see the module's docstring)."""

    sample_rate: int
    users: dict[str, VoiceActivity] = field(default_factory=dict)
    avatars: dict[str, VoiceActivity] = field(default_factory=dict)

    def add_user(self, key: str) -> bool:
        """Follow a user's audio; False when MAX_USERS are followed already."""
        if key in self.users:
            return True
        if len(self.users) >= MAX_USERS:
            return False
        self.users[key] = VoiceActivity(self.sample_rate)
        return True

    def set_user_delay(self, key: str, delay_s: float) -> None:
        if (va := self.users.get(key)) is not None:
            va.delay_s = delay_s

    def set_avatar_delay(self, key: str, delay_s: float) -> None:
        if (va := self.avatars.get(key)) is not None:
            va.delay_s = delay_s

    def remove_user(self, key: str) -> None:
        self.users.pop(key, None)

    def remove_avatar(self, key: str) -> None:
        self.avatars.pop(key, None)

    def user_audio(self, key: str, x: np.ndarray, start: float, now: float) -> None:
        if (va := self.users.get(key)) is not None:
            va.add(x, start, now)

    def avatar_audio(self, key: str, x: np.ndarray, start: float, now: float) -> None:
        va = self.avatars.get(key)
        if va is None:
            va = self.avatars[key] = VoiceActivity(self.sample_rate)
        va.add(x, start, now)

    def _user_segments(self) -> list[Segment]:
        return sorted(
            (s for va in self.users.values() for s in va.confirmed()), key=lambda s: s.start
        )

    def events(self, now: float) -> list[Response | Interruption]:
        """What can be decided now, each once."""
        out: list[Response | Interruption] = []
        if not self.users:
            return out
        users_until = min(va.decided_until(now) for va in self.users.values())
        user_segs = self._user_segments()
        for name, av in self.avatars.items():
            av_segs = av.confirmed()
            for a in av_segs:
                if not a.checked and a.start <= users_until:
                    a.checked = True
                    r = self._response(name, a, user_segs, av_segs)
                    if r is not None:
                        out.append(r)
                if not a.interrupt_done:
                    i = self._interruption(name, a, user_segs, av.heard_until, users_until)
                    if i is not None:
                        out.append(i)
        return out

    @staticmethod
    def _response(
        name: str, a: Segment, user_segs: list[Segment], av_segs: list[Segment]
    ) -> Response | None:
        ended = [u for u in user_segs if u.end is not None and u.end <= a.start]
        talking = any(u.start <= a.start and (u.end is None or u.end > a.start) for u in user_segs)
        # user speech that ended while this avatar spoke needs no answer
        for u in ended:
            if not u.answered and any(
                s is not a and s.start <= u.end and (s.end is None or s.end >= u.end)  # type: ignore[operator]
                for s in av_segs
            ):
                u.answered = True
        waiting = [u for u in ended if not u.answered]
        for u in ended:
            u.answered = True
        if talking or not waiting:
            return None
        last = max(waiting, key=lambda u: u.end or 0.0)
        assert last.end is not None
        gap = a.start - last.end
        if gap > MAX_RESPONSE_S:
            return None
        return Response(name, gap, last.end, a.start)

    @staticmethod
    def _interruption(
        name: str, a: Segment, user_segs: list[Segment], heard: float, users_until: float
    ) -> Interruption | None:
        during = [
            u
            for u in user_segs
            if u.start >= a.start + INTERRUPT_AFTER_S and (a.end is None or u.start < a.end)
        ]
        if any(u.end is None and u.loud_s < INTERRUPT_MIN_S for u in during):
            return None  # not yet known to be long enough
        over = [u for u in during if u.loud_s >= INTERRUPT_MIN_S]
        if over:
            u0 = over[0].start
            if a.end is not None:
                a.interrupt_done = True
                stop = a.end - u0
                return Interruption(name, u0, stop if stop <= STOP_MAX_S else None)
            if heard - u0 > STOP_MAX_S:
                a.interrupt_done = True
                return Interruption(name, u0, None)
            return None
        if a.end is not None and users_until >= a.end:
            a.interrupt_done = True  # it spoke to its end with nobody talking over it
        return None
