"""A departed avatar's state is freed as soon as the monitor drops it, by reference counting
alone: no reference cycle keeps its analysis (several MB) waiting for a full collection, which
CPython runs only once the long-lived objects have grown by a quarter."""

from __future__ import annotations

import gc
import weakref

from syncmon.live.avatar import AUDIO_RATE
from syncmon.live.room import WatchOptions, new_avatar_state
from syncmon.reference import ReferenceAvatar
from tests.conftest import ANALYSIS_RATE, feed_avatar


def test_a_dropped_avatar_state_is_freed_without_the_cycle_collector() -> None:
    st = new_avatar_state("room", "avatar", WatchOptions(face=True), joined_at=None)
    assert AUDIO_RATE == ANALYSIS_RATE  # feed_avatar feeds the live rate
    # as the live receiver's stats would have said: viewers play what arrives, no own bias
    st.analyzer.viewer_sync, st.analyzer.receiver_bias_s = False, 0.0
    feed_avatar(ReferenceAvatar(), 12.0, an=st.analyzer)
    # the analyzer's estimates reached the state through its callback
    assert sum(st.offset_abs["content"].counts) > 0
    refs = [weakref.ref(st), weakref.ref(st.analyzer), weakref.ref(st.analyzer.content)]
    gc.collect()
    gc.disable()
    try:
        del st
        alive = [r() for r in refs]
        assert alive == [None, None, None], [type(a).__name__ for a in alive if a is not None]
    finally:
        gc.enable()


async def test_an_ended_room_monitor_is_freed_without_the_cycle_collector() -> None:
    # a worker serves rooms one after another for days: an ended room's monitor (and the turns
    # it followed) must go with the last reference to it, not wait for a full collection
    from syncmon.live.config import LiveKitCredentials
    from syncmon.live.room import RoomMonitor
    from syncmon.live.state import MonitorState

    state = MonitorState()
    mon = RoomMonitor(
        creds=LiveKitCredentials(url="ws://127.0.0.1:9", api_key="k", api_secret="s"),
        room_name="ended",
        state=state,
        options=WatchOptions(turns=True),
    )
    assert mon._turns is not None
    refs = [weakref.ref(mon), weakref.ref(mon._turns)]
    gc.collect()
    gc.disable()
    try:
        del mon
        alive = [r() for r in refs]
        assert alive == [None, None], [type(a).__name__ for a in alive if a is not None]
    finally:
        gc.enable()
