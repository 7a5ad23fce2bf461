"""The users' voices in a room, for its turns (``analysis.turns``); opt-in: ``--turns``.

A user is a remote participant of kind standard or SIP (a person in a browser or on a phone),
never an agent, an avatar, an egress or an ingress. Only its microphone audio is subscribed, at
16 kHz mono like the avatar's, and only its voice activity is kept: no sample is stored,
exported or logged, and no label names a user (the series stay the avatar's). At most
``analysis.turns.MAX_USERS`` users per room are followed.

Each turn's times are on the monitor's receive clock: a response here is what the SFU saw
between the user's last word arriving and the avatar's first; the user hears the avatar later
by the avatar's path from the SFU to them (its jitter buffer and network), and finished
speaking earlier by their own path to the SFU -- the user's response time is this plus both
one-way delays, which the monitor cannot see (they are the other subscriber's and the user's
publisher's stats, not the monitor's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import numpy as np
from livekit import rtc
from livekit.rtc._proto import participant_pb2

from ..analysis.clock import SampleClock
from ..analysis.turns import MAX_USERS, Interruption, Response, Turns
from .avatar import AUDIO_RATE, MALFORMED_LOG, audio_stream
from .state import AvatarState

log = logging.getLogger(__name__)
RESTART_S = 1.0
STATS_S = 2.0
# a response waits this long for the avatar's first content offset (its video path), at most
# this many at once
VIDEO_WAIT_S = 20.0
MAX_VIDEO_PENDING = 16

_USER_KINDS = {
    participant_pb2.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    participant_pb2.ParticipantKind.PARTICIPANT_KIND_SIP,
}


def is_user(p: rtc.RemoteParticipant) -> bool:
    return p.kind in _USER_KINDS


class TurnFollower:
    """Follows the users' microphone audio of one room and turns the turns into the avatars'
    state (``avatar_state`` finds an avatar's state by identity)."""

    def __init__(
        self,
        room: str,
        avatar_state: Callable[[str], AvatarState | None],
        on_restart: Callable[[], None] = lambda: None,
    ) -> None:
        self.room = room
        self.turns = Turns(AUDIO_RATE)
        self._avatar_state = avatar_state
        self._on_restart = on_restart
        self._tasks: dict[str, asyncio.Task[None]] = {}  # by track sid
        self._tracks: dict[str, rtc.RemoteAudioTrack] = {}
        self._full_logged = False
        self._video_pending: list[tuple[float, Response]] = []

    def follow(self, track: rtc.RemoteAudioTrack, key: str) -> None:
        if key in self._tasks:
            return
        self._tracks[key] = track
        if not self.turns.add_user(key):
            if not self._full_logged:
                log.warning(
                    "room %s: more than %d users speak; the others' turns are not followed",
                    self.room,
                    MAX_USERS,
                )
                self._full_logged = True
            return
        task = asyncio.get_running_loop().create_task(self._user(track, key))
        task.add_done_callback(lambda t: self._done(key, t))
        self._tasks[key] = task

    def forget(self, key: str) -> None:
        self._tracks.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.turns.remove_user(key)

    def forget_avatar(self, identity: str) -> None:
        self.turns.remove_avatar(identity)

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            self._tasks.pop(key, None)
            self.turns.remove_user(key)
        if task.cancelled() or task.exception() is None:
            return
        # a user's stream that failed: said, counted and followed again a second later
        self._on_restart()
        exc = task.exception()
        log.error(
            "room %s: following a user's voice failed (%s: %s); following it again in %.0f s",
            self.room,
            type(exc).__name__,
            exc,
            RESTART_S,
            exc_info=exc,
        )
        asyncio.get_running_loop().call_later(RESTART_S, self._again, key)

    def _again(self, key: str) -> None:
        if (track := self._tracks.get(key)) is not None and key not in self._tasks:
            self.follow(track, key)

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._tracks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _user(self, track: rtc.RemoteAudioTrack, key: str) -> None:
        stream = audio_stream(track)
        clock = SampleClock(AUDIO_RATE)
        stats = asyncio.get_running_loop().create_task(self._delays(track, key))
        try:
            async for chunk in stream:
                if isinstance(chunk, ValueError):
                    MALFORMED_LOG.warning(
                        f"audio:{key}", "skipping a user's audio frame: %s", chunk
                    )
                    continue
                now, x = chunk.arrival, chunk.samples
                self.turns.user_audio(key, x, clock.chunk(now, x.size), now)
                self.dispatch(now)
        finally:
            stats.cancel()
            await stream.aclose()

    async def _delays(self, track: rtc.RemoteAudioTrack, key: str) -> None:
        """The user's audio delay in this monitor's jitter buffer (NetEq), from its stats every
        STATS_S: its times are taken back by it, to when the audio reached the monitor."""
        prev: tuple[float, int] | None = None
        while True:
            await asyncio.sleep(STATS_S)
            try:
                stats = await track.get_stats()
            except Exception as e:  # stats are best effort: the last delay stands
                log.debug("user audio stats failed: %s", e)
                continue
            for s in stats:
                if s.HasField("inbound_rtp"):
                    ib = s.inbound_rtp.inbound
                    cur = (float(ib.jitter_buffer_delay), int(ib.jitter_buffer_emitted_count))
                    if prev is not None and cur[1] > prev[1]:
                        d = (cur[0] - prev[0]) / (cur[1] - prev[1])
                        self.turns.set_user_delay(key, d)
                        log.debug("room %s: a user's audio delay %.1f ms", self.room, 1e3 * d)
                    prev = cur

    def avatar_audio(self, identity: str, x: np.ndarray, start: float, now: float) -> None:
        """An avatar's audio chunk (from its own stream, already on the receive clock) that
        arrived at ``now``."""
        self.turns.avatar_audio(identity, x, start, now)
        st = self._avatar_state(identity)
        if st is not None and (d := st.rtp["audio"].jitter_buffer_delay_s) is not None:
            # (its stats poll: live.avatar) its times taken back by it, as the user's are
            self.turns.set_avatar_delay(identity, d)
        self.dispatch(now)

    def dispatch(self, now: float) -> None:
        for ev in self.turns.events(now):
            st = self._avatar_state(ev.avatar)
            if st is None:
                continue
            if isinstance(ev, Response):
                st.response("audio", ev.seconds)
                log.debug(
                    "room %s: %s answered in %.3f s (user's end at %.4f, its onset at %.4f)",
                    self.room,
                    ev.avatar,
                    ev.seconds,
                    ev.user_end,
                    ev.onset,
                )
                if len(self._video_pending) < MAX_VIDEO_PENDING:
                    self._video_pending.append((now, ev))
            elif isinstance(ev, Interruption):
                st.interrupted(ev.stop_s)
        self._video(now)

    def _video(self, now: float) -> None:
        """The mouth starts moving where the voice does, moved by the lip-sync offset the content
        method measures on this avatar (t_video - t_audio): taken as soon as one is known (an
        avatar's first turns come before the content method's first window is full), given up
        after VIDEO_WAIT_S."""
        keep: list[tuple[float, Response]] = []
        for at, ev in self._video_pending:
            st = self._avatar_state(ev.avatar)
            if st is None or now - at > VIDEO_WAIT_S:
                continue
            content = st.analyzer.offsets["content"].offset_s
            if content is None:
                keep.append((at, ev))
            else:
                st.response("video", ev.seconds + content)
        self._video_pending = keep
