"""When an avatar's picture ends live (the connection is lost, the room closes, the avatar
leaves or unpublishes its video), the frames its last windows left unjudged are judged then:
a frame is judged 0.6-2.6 s after it arrives, and a freeze that ran to the picture's end lost
that much of its speaking seconds. (Leaving is checked through the real server in
tests/live/test_watch.py.)"""

from __future__ import annotations

import asyncio

import pytest

from syncmon.live.avatar import AvatarMonitor
from syncmon.live.room import WatchOptions, new_avatar_state
from syncmon.reference import Impairments, ReferenceAvatar, SpeechSource
from syncmon.reference.articulation import ArticulationConfig
from syncmon.reference.avatar import speaking_seconds
from tests.conftest import feed_avatar

SPANS = ((13.0, 5.0),)  # frozen from 13 s to the picture's end at 18 s
HEAD = ArticulationConfig(head_px=4.0, head_roll_deg=2.0)


def voice() -> SpeechSource:
    return SpeechSource(seed=63, consonants=True, phrase_pause_s=(0.4, 1.5))


def fed_monitor() -> AvatarMonitor:
    st = new_avatar_state("room", "avatar", WatchOptions(face=True), joined_at=None)
    avatar = ReferenceAvatar(
        impairments=Impairments(seed=63, lip_still=SPANS),
        speech=voice(),
        articulation=HEAD,
        renderer="photo",
    )
    feed_avatar(avatar, 18.0, an=st.analyzer)
    return AvatarMonitor(st)


async def end(am: AvatarMonitor, how: str) -> None:
    # the video task as attach() leaves it, a stream still being read (it never ends alone)
    am._tasks["video"] = asyncio.get_running_loop().create_task(asyncio.Event().wait())
    if how == "lost":
        am.discontinuity()
    elif how == "unpublished":
        am.detach("video")
    else:
        await am.aclose()


@pytest.mark.parametrize("how", ["lost", "unpublished", "closed"])
def test_a_freeze_running_to_the_pictures_end_is_counted_to_its_last_frame(how: str) -> None:
    truth = speaking_seconds(voice(), SPANS)
    am = fed_monitor()
    still = am.analyzer.content.lip_still
    # what the windows had judged when the frames stopped: seconds short of the truth
    before = still.seconds
    assert truth > 3.0 and before < truth - 0.5, (before, truth)
    asyncio.run(end(am, how))
    assert still.episodes == 1 and abs(still.seconds - truth) <= 0.3, (still, truth)
    assert "video" not in am._tasks
    assert am.state.task_restarts == {}  # judging the end did not fail
