"""When each part of an utterance's audio left livekit's audio source: pure arithmetic.

The SDK's ``AudioSource`` (with a queue) keeps what ``capture_frame`` put in a buffer; a native
``RepeatingTask`` hands 10 ms of it to WebRTC on every tick of a timer that is phase-locked for
the source's lifetime (WebRTC's repeating task plans each run from the planned time of the last)
and sends nothing on a tick that finds less than 10 ms. So, given the timer's phase and when
each chunk went in:

- the audio an utterance starts with leaves on the first tick after it went in, behind what was
  already queued;
- the rest follows it 10 ms per tick *at the earliest*: exactly so as long as each chunk is in
  the buffer before the tick that should send its first block.

A chunk that comes later than that may have found the buffer dry -- everything after it then
leaves a tick (or more) later -- or may have made it after all: on a busy host the timer's task
itself runs late, and a run that is late catches up at once. Which one happened cannot be told
from here, so from that chunk on the leave is not known (``leave`` is None). The audio of a
later stretch whose chunks all came in time for the *earliest* schedule did leave in one piece
(``in_time``): a tick cannot send a block before it is due, so a chunk early for its earliest
tick is early for whichever tick sends it. Its leave is then bounded below by that schedule.

A chunk that went in while a tick fell (between the call and its confirmation) might have made
that tick or not: the same.

For a gauge, which must say something for every frame, ``estimate`` places the rest anyway, as
the source runs when its timer keeps time: a chunk whose middle (between the call and its
confirmation) came after its tick missed it and every tick up to the first after it, and what
follows leaves that much later. Each chunk it placed that way is a tick of uncertainty, which
it returns with the leave: the tick may have run late and taken it after all. (A producer paced
in real time, as livekit-agents' A/V synchronizer is, can put its chunks in right at the
source's ticks for a whole session -- the phase of the two clocks is set when they start --
and a leave that is only ever "known" would then be unknown most of the time.)

Times are on the monotonic clock (the timer's); a 10 ms block is timed at its start (the tick
that sends it minus 10 ms), the convention of the tap and the monitor.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

TICK_S = 0.01
# a chunk confirmed later than this before the tick that sends its first block may have missed
# it (the margin covers the phase's own error)
CAPTURE_GUARD_S = 0.0003
MAX_CAPTURES = 4000  # ~3 minutes of 40 ms chunks: an utterance longer than that is not followed


@dataclass(frozen=True)
class Capture:
    offset: float  # of its first sample, in the utterance's audio (s)
    t_call: float  # capture_frame called
    t_done: float  # its confirmation: the audio is in the buffer by then


class SendSchedule:
    """One utterance's captures into the audio source, and when each part of it left.

    ``base`` is the leave of the utterance's first sample when it was measured (on the tap);
    otherwise it is modelled from the first capture, the timer's ``phase`` and what was queued
    ahead of it.
    """

    def __init__(self, phase: float | None = None, queued_ahead_s: float = 0.0) -> None:
        self.phase = phase
        self.queued_ahead_s = queued_ahead_s
        self.captures: list[Capture] = []
        self.captured_s = 0.0  # audio gone in so far
        self.measured_base: float | None = None
        self._offsets: list[float] = []
        # how far the captures were checked against which base, and where the leave stopped
        # being known
        self._checked_base: float | None = None
        self._checked = 1
        self._late_at = math.inf
        self.truncated_at = math.inf
        # the estimate's walk: from each of these offsets on, this delay and uncertainty (s)
        self._est_base: float | None = None
        self._est_checked = 1
        self._est_from: list[float] = [0.0]
        self._est_delay: list[float] = [0.0]
        self._est_unc: list[float] = [0.0]

    def add(self, duration_s: float, t_call: float, t_done: float) -> None:
        if len(self.captures) >= MAX_CAPTURES:  # what follows is not followed
            self.truncated_at = min(self.truncated_at, self.captured_s)
            self.captured_s += duration_s
            return
        self.captures.append(Capture(self.captured_s, t_call, t_done))
        self._offsets.append(self.captured_s)
        self.captured_s += duration_s

    def set_phase(self, phase: float | None) -> None:
        self.phase = phase

    def set_base(self, leave: float) -> None:
        """The utterance's first sample left at ``leave`` (measured on the tap)."""
        self.measured_base = leave

    @property
    def base(self) -> float | None:
        """When the utterance's first sample left (measured, else modelled; None: not known)."""
        if self.measured_base is not None:
            return self.measured_base
        return self.modelled_base(self.phase)

    def modelled_base(self, phase: float | None, earliest: bool = False) -> float | None:
        """The first sample's leave from the first capture and the timer's ``phase``; None
        when a tick fell while it went in -- unless ``earliest``: then the earlier of the two
        ticks' leaves."""
        if phase is None or not self.captures:
            return None
        first = self.captures[0]
        since = (first.t_call - phase) % TICK_S
        # what is queued leaves first, whole blocks a tick each (the SDK's own queued estimate
        # drains continuously: rounded to the ticks)
        q = self.queued_ahead_s
        ahead = TICK_S * round((q + since) / TICK_S) if q > 1e-4 else 0.0
        base = first.t_call - since + ahead
        # a tick fell while it went in, or as good as (the timer's task may fire a little
        # early or late): which one took it is not known
        just_after = since < CAPTURE_GUARD_S
        if just_after or since + (first.t_done - first.t_call) >= TICK_S - CAPTURE_GUARD_S:
            if not earliest:
                return None
            # (just after a tick: that tick may have taken it, a block timed a tick before it)
            return base - (TICK_S if just_after else 0.0)
        return base

    def earliest_base(self) -> float | None:
        """The earliest the first sample can have left: ``base`` where known, else the earlier
        of the two ticks that may have taken it; None without the timer's phase."""
        base = self.base
        return base if base is not None else self.modelled_base(self.phase, earliest=True)

    def _late(self) -> float | None:
        """Offset of the block from which the leave is no longer known (inf: all known so
        far; None: the base itself is not known). Checked incrementally: called per frame."""
        base = self.base
        if base is None:
            return None
        if self._checked_base != base:
            self._checked_base, self._checked, self._late_at = base, 1, math.inf
        while self._late_at == math.inf and self._checked < len(self.captures):
            cap = self.captures[self._checked]
            self._checked += 1
            if not self._on_time(cap, base):
                self._late_at = math.floor(cap.offset / TICK_S + 1e-6) * TICK_S
        return self._late_at

    @staticmethod
    def _on_time(cap: Capture, base: float) -> bool:
        k = math.floor(cap.offset / TICK_S + 1e-6)
        due = base + (k + 1) * TICK_S  # the tick that sends the block holding its first sample
        return cap.t_done <= due - CAPTURE_GUARD_S

    def leave(self, offset: float) -> float | None:
        """When the audio at ``offset`` left; None if that is not known or it has not gone in."""
        if offset >= self.captured_s:
            return None
        late = self._late()
        if late is None or offset >= min(late, self.truncated_at):
            return None
        return self.base + offset if self.base is not None else None

    def estimate(self, offset: float) -> tuple[float, float] | None:
        """When the audio at ``offset`` left, best estimate, and its uncertainty (s: 0 where
        the leave is known); None if the base is not known or it has not gone in."""
        if offset >= min(self.captured_s, self.truncated_at):
            return None
        base = self.base
        if base is None:
            return None
        if self._est_base != base:
            self._est_base, self._est_checked = base, 1
            self._est_from, self._est_delay, self._est_unc = [0.0], [0.0], [0.0]
        while self._est_checked < len(self.captures):
            cap = self.captures[self._est_checked]
            self._est_checked += 1
            delay = self._est_delay[-1]
            k = math.floor(cap.offset / TICK_S + 1e-6)
            due = base + delay + (k + 1) * TICK_S
            if cap.t_done <= due - CAPTURE_GUARD_S:
                continue
            mid = 0.5 * (cap.t_call + cap.t_done)
            missed = max(0, math.ceil((mid - due) / TICK_S - 1e-9))
            self._est_from.append(k * TICK_S)
            self._est_delay.append(delay + missed * TICK_S)
            self._est_unc.append(self._est_unc[-1] + TICK_S)
        i = bisect.bisect_right(self._est_from, offset + 1e-9) - 1
        return base + self._est_delay[i] + offset, self._est_unc[i]

    def earliest(self, offset: float) -> float | None:
        """The earliest the audio at ``offset`` can have left (None: not even the first
        sample's earliest leave is known)."""
        base = self.earliest_base()
        return None if base is None else base + offset

    def first_late(self, start: float, end: float) -> tuple[float, float] | None:
        """The first chunk of [start, end) that came late for its earliest tick: its offset
        and how late (s), for the log."""
        base = self.base
        if base is None:
            return None
        first = max(1, bisect.bisect_right(self._offsets, start + 1e-9) - 1)
        last = bisect.bisect_left(self._offsets, end - 1e-9)
        for cap in self.captures[first:last]:
            if not self._on_time(cap, base):
                due = base + (math.floor(cap.offset / TICK_S + 1e-6) + 1) * TICK_S
                return cap.offset, cap.t_done - due
        return None

    def in_time(self, start: float, end: float) -> bool | None:
        """Did every chunk of [start, end) go in before its earliest tick (so that the audio
        left in one piece)? None until it has all gone in."""
        if end > self.captured_s:
            return None
        base = self.base
        if base is None or end > self.truncated_at:
            return False
        first = max(1, bisect.bisect_right(self._offsets, start + 1e-9) - 1)
        last = bisect.bisect_left(self._offsets, end - 1e-9)
        return all(self._on_time(cap, base) for cap in self.captures[first:last])
