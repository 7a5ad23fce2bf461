"""Join a room hidden and subscribe-only, find the avatars, keep the connection up.

An avatar is a remote participant of kind agent that publishes video, or that carries
``lk.publish_on_behalf`` (livekit-agents' avatar workers join as kind agent and publish on behalf
of the voice agent), or the identity given. A voice agent without video is not one (it would
page as an avatar whose video is down), and neither is a user, whatever attributes it sets:
only the server can make a participant kind agent. Only its
audio and video are subscribed; tracks published later, unpublished, muted and unmuted are
followed, and several avatars in one room are measured separately. A lost connection sets
``syncmon_room_connected 0`` and is retried with exponential backoff while /metrics keeps
answering; a room that ends has its series removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from livekit import rtc
from livekit.rtc._proto import participant_pb2

from ..analysis.lipsync import LipSyncConfig
from ..analysis.session import AnalyzerConfig, SyncAnalyzer
from ..errors import ConnectError
from ..marks import TOPIC, MarkError, TimingMark
from .avatar import AUDIO_RATE, MALFORMED_LOG, AvatarMonitor
from .config import LiveKitCredentials
from .state import AvatarState, MonitorState, RoomState
from .token import monitor_token
from .turns import TurnFollower, is_user

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTR_PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
CONNECT_TIMEOUT_S = 5.0
# one room connect at a time per process: with several rooms connecting at once from the
# threads of a loaded worker, the SDK's FFI timed out waiting for a room's ready request after
# its connect callback and panicked, ending the process
_CONNECT_GATE = threading.Lock()
# a connect holds the gate at most this long: a slow one (a server far away, up to the 60 s
# safety timeout) must not stall every other room's reconnect behind it
GATE_HOLD_S = CONNECT_TIMEOUT_S
GATE_POLL_S = 0.02


async def acquire_gate(gate: threading.Lock) -> None:
    """Take a lock shared with other threads' event loops without a thread of our own: polled,
    so that a cancelled wait can never take the lock later and leave it held (a thread blocked
    in ``acquire`` would, and every later connect of the process would hang)."""
    while not gate.acquire(blocking=False):
        await asyncio.sleep(GATE_POLL_S)


async def gated(
    start: Callable[[], Awaitable[T]], gate: threading.Lock, *, hold_s: float, timeout_s: float
) -> T:
    """Run ``start()`` holding ``gate`` until it completes or ``hold_s`` passes, whichever is
    first, then wait for it without the gate up to ``timeout_s`` in all (``TimeoutError``)."""
    await acquire_gate(gate)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        task = asyncio.ensure_future(start())
    except BaseException:
        gate.release()
        raise
    try:
        try:
            await asyncio.wait({task}, timeout=hold_s)
        finally:
            gate.release()
        left = max(0.0, timeout_s - (loop.time() - t0))
        return await asyncio.wait_for(task, timeout=left)
    except BaseException:
        if not task.done():
            task.cancel()
        raise


BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
# the room's participants are checked against what is monitored this often (cheap: a dict
# walk; a subscription is requested only for a publication not subscribed yet)
RECONCILE_S = 5.0
_ROOM_GONE = {
    participant_pb2.DisconnectReason.ROOM_DELETED,
    participant_pb2.DisconnectReason.ROOM_CLOSED,
}


def is_unauthorized(message: str) -> bool:
    m = message.lower()
    return any(
        s in m
        for s in (
            "401",
            "unauthorized",
            "invalid token",
            "token is expired",
            "could not validate",
            "invalid api key",
            "signature",
        )
    )


@dataclass(frozen=True)
class WatchOptions:
    """What a room monitor looks for and how it measures."""

    participant: str | None = None
    calibration_s: float = 0.0
    face: bool = False  # find the avatar's face for the lip-still account (analysis.face)
    # a content estimate (over the last 8 s) every this many seconds once the mouth is located
    # (every second until then): a recording's analysis makes one a second; live, every 2 s
    # halves the estimator's cost, the largest share of the monitor's own (README,
    # Performance), and loses nothing a 15 s scrape would show
    content_every_s: float = 2.0
    turns: bool = False  # follow the users' voices too, for the turns (live.turns)
    stats_interval_s: float = 2.0
    # how long the series of an avatar that left (or a room that ended) stay, so that the
    # next Prometheus scrape still sees their final values
    linger_s: float = 30.0


def new_avatar_state(
    room: str, identity: str, options: WatchOptions, joined_at: float | None
) -> AvatarState:
    """An avatar's state and analyzer, freed by reference counting alone once dropped.

    The analyzer reports each estimate to the state that holds it, through a weak reference:
    a closure over the state itself is a cycle (state -> analyzer -> callback -> state), and a
    departed avatar's analysis then waits for a full collection, which CPython runs only once
    the long-lived objects have grown by a quarter (the SDK, numpy and scipy alone are
    ~100,000 of them): in practice never, one avatar's state more for every one that left.
    """
    ref: weakref.ref[AvatarState] | None = None

    def on_estimate(method: str, est: object) -> None:
        st = ref() if ref is not None else None
        off = getattr(est, "offset_s", None)
        if st is not None and off is not None:
            st.observe_offset(method, off)

    cfg = AnalyzerConfig(
        lipsync=LipSyncConfig(calibration_s=options.calibration_s, hop_s=options.content_every_s),
        face=options.face,
    )
    analyzer = SyncAnalyzer(cfg, audio_rate=AUDIO_RATE, on_estimate=on_estimate, live_receiver=True)
    st = AvatarState(room=room, participant=identity, analyzer=analyzer, joined_at=joined_at)
    ref = weakref.ref(st)
    return st


class RoomMonitor:
    """Monitors one room until ``stop()``; reconnects on its own."""

    def __init__(
        self,
        *,
        creds: LiveKitCredentials,
        room_name: str,
        state: MonitorState,
        options: WatchOptions | None = None,
        identity: str | None = None,
    ) -> None:
        self.creds = creds
        self.room_name = room_name
        self.state = state
        self.options = options or WatchOptions()
        self.identity = identity or f"syncmon-{secrets.token_hex(4)}"
        self._avatars: dict[str, AvatarMonitor] = {}
        self._removals: dict[str, asyncio.TimerHandle] = {}
        self._joined: dict[str, float] = {}  # identity -> when it joined (monotonic)
        self._closing: set[asyncio.Task[None]] = set()
        self._room: rtc.Room | None = None
        self._stop = asyncio.Event()
        self._lost = asyncio.Event()
        self._ended = False
        self.connected_once = asyncio.Event()
        self.on_room_ended: Callable[[str], None] | None = None
        self._turns: TurnFollower | None = None
        if self.options.turns:
            # (the follower reaches the room's state by name, not through this monitor: a
            # bound method of it would make a cycle, and an ended room's monitor would wait
            # for a full collection)
            def avatar_state(identity: str) -> AvatarState | None:
                rs = state.rooms.get(room_name)
                return None if rs is None else rs.avatars.get(identity)

            def count_user_restart() -> None:
                if (rs := state.rooms.get(room_name)) is not None:
                    rs.user_restarts += 1

            self._turns = TurnFollower(room_name, avatar_state, count_user_restart)

    @property
    def room_state(self) -> RoomState | None:
        return self.state.rooms.get(self.room_name)

    def _token(self) -> str:
        if self.creds.token:
            return self.creds.token
        assert self.creds.api_key and self.creds.api_secret
        return monitor_token(
            api_key=self.creds.api_key,
            api_secret=self.creds.api_secret,
            room=self.room_name,
            identity=self.identity,
        )

    async def connect_once(self) -> None:
        """One connection attempt; raises ConnectError naming what went wrong."""
        room = rtc.Room()
        self._wire(room)
        opts = rtc.RoomOptions(auto_subscribe=False, connect_timeout=CONNECT_TIMEOUT_S)
        try:
            # a safety net only: the SDK's own connect_timeout answers first. Cancelling a
            # connect the SDK has completed makes its FFI panic (and end the process) when the
            # room's ready request never follows, which a loaded host hit at 3 x 5 s
            await gated(
                lambda: room.connect(self.creds.url, self._token(), opts),
                _CONNECT_GATE,
                hold_s=GATE_HOLD_S,
                timeout_s=12 * CONNECT_TIMEOUT_S,
            )
        except asyncio.TimeoutError:
            await _quiet_disconnect(room)
            raise ConnectError(f"timed out connecting to {self.creds.url}") from None
        except rtc.ConnectError as e:
            await _quiet_disconnect(room)
            msg = str(getattr(e, "message", e))
            if is_unauthorized(msg):
                raise ConnectError(
                    f"unauthorized: {self.creds.url} rejected the API key/secret or token"
                ) from None
            raise ConnectError(f"cannot connect to {self.creds.url}: {_first_line(msg)}") from None
        self._room = room
        self._lost.clear()
        rs = self.room_state
        if rs is not None:
            rs.connected = True
        self.connected_once.set()
        for p in room.remote_participants.values():
            self._consider(p)

    async def run(self) -> None:
        """Connect (the first failure raises), then keep the room monitored until stopped.

        After the first connect nothing ends the monitor but ``stop()`` or the room ending: a
        lost connection is retried with backoff, and an unexpected error (a bug, the SDK) is
        logged with its reason, counted in ``syncmon_task_restarts_total{task="room"}`` and
        treated as a lost connection."""
        if self.state.add_room(self.room_name) is None:
            raise ConnectError(f"room cap of {self.state.max_rooms} reached")
        try:
            await self.connect_once()
            while not self._stop.is_set() and not self._ended:
                await self._wait_lost()
                if self._stop.is_set() or self._ended:
                    break
                try:
                    await self._reconnect()
                except Exception as e:
                    self._count_restart(e)
                    self._lost.set()
        finally:
            await self._close()

    def _count_restart(self, e: BaseException) -> None:
        if (rs := self.room_state) is not None:
            rs.task_restarts += 1
        log.error(
            "room %s monitor failed (%s: %s); starting it over",
            self.room_name,
            type(e).__name__,
            e,
            exc_info=e,
        )

    async def _wait_lost(self) -> None:
        """Until the connection is lost or the monitor stopped; meanwhile the room's
        participants are reconciled every RECONCILE_S, so that one the events never announced
        is monitored all the same."""
        stop_wait = asyncio.ensure_future(self._stop.wait())
        lost_wait = asyncio.ensure_future(self._lost.wait())
        try:
            while not (stop_wait.done() or lost_wait.done()):
                await asyncio.wait(
                    {stop_wait, lost_wait},
                    timeout=RECONCILE_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                self._reconcile()
        finally:
            stop_wait.cancel()
            lost_wait.cancel()

    def _reconcile(self) -> None:
        room = self._room
        if room is not None and not self._lost.is_set():
            for p in list(room.remote_participants.values()):
                self._consider(p)

    async def _reconnect(self) -> None:
        """The connection was lost: keep the series, mark them, retry with backoff."""
        rs = self.room_state
        if rs is not None:
            rs.connected = False
        for am in self._avatars.values():
            am.discontinuity()
        if self._turns is not None:
            await self._turns.aclose()
        if self._room is not None:
            await _quiet_disconnect(self._room)
            self._room = None
        backoff = BACKOFF_INITIAL_S
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=backoff)
            if self._stop.is_set():
                return
            try:
                await self.connect_once()
            except ConnectError as e:
                log.warning("reconnect to room failed: %s", e)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            except Exception as e:  # the SDK failed in a way it does not name: try again
                self._count_restart(e)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            if (rs := self.room_state) is not None:
                rs.reconnects += 1
            return

    def stop(self) -> None:
        self._stop.set()

    async def _close(self) -> None:
        if self._turns is not None:
            await self._turns.aclose()
        for am in self._avatars.values():
            await am.aclose()
        self._avatars.clear()
        if self._room is not None:
            await _quiet_disconnect(self._room)
            self._room = None
        for h in self._removals.values():
            h.cancel()
        self._removals.clear()
        if self._ended:
            if (rs := self.room_state) is not None:
                rs.connected = False
                for a in rs.avatars.values():
                    a.track_up = dict.fromkeys(a.track_up, False)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.options.linger_s)
            self.state.remove_room(self.room_name)
        elif (rs := self.room_state) is not None:
            rs.connected = False

    # -- discovery --------------------------------------------------------------------------
    def is_avatar(self, p: rtc.RemoteParticipant) -> bool:
        if self.options.participant is not None:
            return bool(p.identity == self.options.participant)
        if p.kind != participant_pb2.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return False
        return ATTR_PUBLISH_ON_BEHALF in p.attributes or any(
            pub.kind == rtc.TrackKind.KIND_VIDEO for pub in p.track_publications.values()
        )

    def _consider(self, p: rtc.RemoteParticipant) -> None:
        if self.is_avatar(p):
            for pub in p.track_publications.values():
                self._subscribe(pub)
        elif self._turns is not None and is_user(p):
            for pub in p.track_publications.values():
                # its voice: a screen share's sound is not what the avatar answers
                if pub.kind == rtc.TrackKind.KIND_AUDIO and pub.source in (
                    rtc.TrackSource.SOURCE_MICROPHONE,
                    rtc.TrackSource.SOURCE_UNKNOWN,
                ):
                    self._subscribe(pub)

    @staticmethod
    def _subscribe(pub: rtc.RemoteTrackPublication) -> None:
        if pub.kind in (rtc.TrackKind.KIND_AUDIO, rtc.TrackKind.KIND_VIDEO) and not pub.subscribed:
            pub.set_subscribed(True)

    def _avatar(self, p: rtc.RemoteParticipant) -> AvatarMonitor | None:
        rs = self.room_state
        if rs is None:
            return None
        am = self._avatars.get(p.identity)
        if am is None:
            if (h := self._removals.pop(p.identity, None)) is not None:
                h.cancel()
            st = new_avatar_state(
                self.room_name, p.identity, self.options, self._joined.get(p.identity)
            )
            rs.avatars[p.identity] = st
            am = AvatarMonitor(st, stats_interval_s=self.options.stats_interval_s)
            if (turns := self._turns) is not None:
                st.turns = True
                am.on_audio = lambda x, start, now, who=p.identity: turns.avatar_audio(
                    who, x, start, now
                )
            self._avatars[p.identity] = am
            log.info("monitoring an avatar in room %s", self.room_name)
        return am

    def _forget(self, identity: str) -> None:
        """The avatar left: stop its streams now, drop its series after the linger."""
        self._joined.pop(identity, None)
        if self._turns is not None:
            self._turns.forget_avatar(identity)
        am = self._avatars.pop(identity, None)
        if am is None:
            return
        for k in ("audio", "video"):
            am.detach(k)
        task = asyncio.get_running_loop().create_task(am.aclose())
        self._closing.add(task)  # held until done: an unreferenced task can vanish mid-run
        task.add_done_callback(self._closing.discard)

        def remove() -> None:
            self._removals.pop(identity, None)
            if (rs := self.room_state) is not None and identity not in self._avatars:
                rs.avatars.pop(identity, None)

        self._removals[identity] = asyncio.get_running_loop().call_later(
            self.options.linger_s, remove
        )

    def _wire(self, room: rtc.Room) -> None:
        """Room events to this monitor's handlers (events of a room replaced by a reconnect
        are ignored where they would change the room's state)."""
        on = room.on
        on("participant_connected", self._on_joined)
        on("participant_attributes_changed", lambda _changed, p: self._consider_remote(p))
        on("data_received", self._on_data)
        # an agent becomes an avatar when it publishes video: its audio too, then
        on("track_published", lambda _pub, p: self._consider(p))
        on("track_subscribed", self._on_subscribed)
        on("track_unsubscribed", lambda _track, pub, p: self._detach(p, pub))
        on("track_unpublished", lambda pub, p: self._detach(p, pub))
        on("track_muted", lambda p, pub: self._set_muted(p, pub, True))
        on("track_unmuted", lambda p, pub: self._set_muted(p, pub, False))
        on("reconnecting", lambda: self._set_connected(room, False))
        on("reconnected", lambda: self._set_connected(room, True))
        on("participant_disconnected", self._on_left)
        on("disconnected", lambda reason: self._on_disconnected(room, reason))

    def _on_joined(self, p: rtc.RemoteParticipant) -> None:
        # the start of the avatar's start-up: the room announced it while this monitor watched
        # (one that was in the room before has no start-up to measure). Not the server's join
        # time: that is ~0.1 s before the avatar's own connect() returns (its connection set
        # up); the announcement is what the room's viewers see, within tens of ms of it.
        # Every participant's, since an agent becomes an avatar later, when it publishes
        # video; bounded by the room's size (forgotten when it leaves)
        self._joined[p.identity] = time.monotonic()
        self._consider(p)

    def _on_left(self, p: rtc.RemoteParticipant) -> None:
        if self._turns is not None:
            for sid in p.track_publications:
                self._turns.forget(sid)
        self._forget(p.identity)

    def _consider_remote(self, p: rtc.Participant) -> None:
        if isinstance(p, rtc.RemoteParticipant):
            self._consider(p)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TOPIC or packet.participant is None:
            return
        am = self._avatars.get(packet.participant.identity)
        if am is None:
            return
        try:
            mark = TimingMark.decode(packet.data)
        except MarkError as e:
            am.state.count_malformed("mark")
            MALFORMED_LOG.warning(
                f"mark:{self.room_name}:{packet.participant.identity}",
                "ignoring a timing mark from an avatar in %s: %s",
                self.room_name,
                e,
            )
            return
        am.analyzer.add_mark(mark)

    def _on_subscribed(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if (
            self._turns is not None
            and isinstance(track, rtc.RemoteAudioTrack)
            and is_user(p)
            and not self.is_avatar(p)
        ):
            self._turns.follow(track, pub.sid)
            return
        if not self.is_avatar(p) or not isinstance(
            track, (rtc.RemoteAudioTrack, rtc.RemoteVideoTrack)
        ):
            return
        am = self._avatar(p)
        if am is not None:
            am.attach(track)
            am.set_muted(_kind_of(pub), pub.muted)

    def _detach(self, p: rtc.Participant, pub: rtc.TrackPublication) -> None:
        if self._turns is not None:
            self._turns.forget(pub.sid)
        am = self._avatars.get(p.identity)
        if am is not None:
            am.detach(_kind_of(pub))

    def _set_muted(self, p: rtc.Participant, pub: rtc.TrackPublication, muted: bool) -> None:
        am = self._avatars.get(p.identity)
        if am is not None:
            am.set_muted(_kind_of(pub), muted)

    def _set_connected(self, room: rtc.Room, connected: bool) -> None:
        if room is self._room and (rs := self.room_state) is not None:
            rs.connected = connected
            if connected:
                rs.reconnects += 1
                # after the SDK rejoined a restarted server, participants that joined meanwhile
                # come in its join response, with no participant_connected event: with
                # auto-subscribe off nothing subscribed them (measured: avatars that joined
                # within seconds of a restart were never monitored)
                self._reconcile()

    def _on_disconnected(self, room: rtc.Room, reason: int) -> None:
        if room is not self._room:
            return
        if reason in _ROOM_GONE:
            log.info("room %s ended", self.room_name)
            self._ended = True
            if self.on_room_ended is not None:
                self.on_room_ended(self.room_name)
        self._lost.set()


def _kind_of(pub: rtc.TrackPublication) -> str:
    return "video" if pub.kind == rtc.TrackKind.KIND_VIDEO else "audio"


async def _quiet_disconnect(room: rtc.Room) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(room.disconnect(), timeout=3.0)


def _first_line(s: str) -> str:
    return s.strip().splitlines()[0] if s.strip() else "connection failed"
