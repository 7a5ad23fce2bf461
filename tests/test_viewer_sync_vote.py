"""Which offset viewers see is decided from libwebrtc's playout stamps, which only a synced pair
(``room.sync_streams``) carries. A stamp missing from a poll or two (a track's start, a loaded
host) must not flip a synced avatar's ``content`` to the received offset, and a server whose
viewers play each track as it arrives must be recognised within two polls. The stats are the
SDK's own protobuf messages, read through the monitor's real poll."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace

import pytest
from livekit.rtc._proto import stats_pb2

from syncmon.live import avatar as avatar_mod
from syncmon.live.avatar import SYNC_LOST_S, AvatarMonitor, ViewerSync
from syncmon.live.room import WatchOptions, new_avatar_state

POLL_S = 2.0  # the monitor's own stats interval


def decide(readings: list[bool], poll_s: float = POLL_S) -> list[bool | None]:
    v = ViewerSync()
    return [v.reading(r, i * poll_s) for i, r in enumerate(readings)]


def test_two_polls_decide_each_way_at_the_start() -> None:
    assert decide([True, True]) == [None, True]
    assert decide([False, False]) == [None, False]
    # a stamp that reads 0 once at a track's start decides nothing
    assert decide([False, True, True]) == [None, None, True]


def test_a_synced_pair_whose_stamps_flicker_is_synced_and_stays_so() -> None:
    # present at every other poll from the start: two of any three polls see it
    assert decide([True, False, True, False, True, False])[2:] == [True] * 4
    # once synced, absent for less than SYNC_LOST_S changes nothing
    n = int(SYNC_LOST_S / POLL_S)  # polls spanning just under SYNC_LOST_S after the first gap
    out = decide([True, True] + [False] * n)
    assert out[1:] == [True] * (n + 1)


def test_stamps_gone_for_good_turn_it_back_after_the_hold() -> None:
    n = int(SYNC_LOST_S / POLL_S) + 1  # the first absent poll, then SYNC_LOST_S later
    out = decide([True, True] + [False] * n)
    assert out[-2:] == [True, False]
    # and a stamp seen inside the hold restarts it
    v = ViewerSync()
    t = itertools.count(0.0, POLL_S)
    out = [
        v.reading(r, next(t)) for r in [True, True] + [False] * (n - 2) + [True] + [False] * (n - 2)
    ]
    assert out[1:] == [True] * (len(out) - 1)


def test_a_late_sync_overrides_an_early_no() -> None:
    # stamps not yet there for the first polls (the sync module needs an RTCP report first)
    assert decide([False, False, True, False, True]) == [None, False, False, False, True]


class StatsTrack:
    """A subscribed track as the monitor's poll sees it: ``get_stats`` gives the SDK's
    RtcStats messages (an inbound-rtp entry with or without a playout stamp)."""

    def __init__(self, stamps: list[float]) -> None:
        self.stamps = iter(stamps)
        self.emitted = 0

    async def get_stats(self) -> list[stats_pb2.RtcStats]:
        self.emitted += 50
        s = stats_pb2.RtcStats()
        ib = s.inbound_rtp
        ib.inbound.estimated_playout_timestamp = next(self.stamps)
        ib.inbound.jitter_buffer_delay = 0.04 * self.emitted
        ib.inbound.jitter_buffer_emitted_count = self.emitted
        return [s]


def test_the_poll_keeps_a_synced_avatar_synced_through_missing_stamps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    st = new_avatar_state("room", "avatar", WatchOptions(), joined_at=None)
    am = AvatarMonitor(st)
    # audio stamps at every poll; video's missing at polls 3, 5 and 6 (a busy host)
    video = [1000.0, 2000.0, 0.0, 4000.0, 0.0, 0.0, 7000.0]
    audio = [1040.0 + 1000.0 * i for i in range(len(video))]
    am._tracks = {"audio": StatsTrack(audio), "video": StatsTrack(video)}  # type: ignore[dict-item]
    # the monitor's clock alone (asyncio's stays real): a poll every POLL_S
    now = [100.0]
    monkeypatch.setattr(avatar_mod, "time", SimpleNamespace(monotonic=lambda: now[0]))
    seen = []
    sources = []
    for _ in video:
        asyncio.run(am.poll_stats_once())
        seen.append(st.analyzer.viewer_sync)
        sources.append(st.analyzer.playout_source)
        now[0] += POLL_S
    assert seen == [None, True, True, True, True, True, True]
    # where a stamp is missing, that poll's playout falls back to the jitter buffers
    assert sources[2] == "jitter_buffer" and sources[3] == "estimated_playout_timestamp"
