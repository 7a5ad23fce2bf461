"""A worker answers LiveKit's job requests (the agents SDK's own JobRequest, with the callbacks
the SDK's server would give it): it accepts while it has room and time, and refuses -- counted,
logged, left for another worker -- at its room cap or while its monitors are behind their
pictures. Through the real server the same refusal may never be asked for (a full worker's load
keeps dispatch away), so it is pinned here."""

from __future__ import annotations

import logging
import time

import pytest
from livekit import agents
from livekit.protocol import agent, models

from syncmon.live.state import MonitorState
from syncmon.live.worker import _on_request


def request() -> tuple[agents.JobRequest, list[str]]:
    said: list[str] = []

    async def on_reject(terminate: bool) -> None:
        said.append(f"reject terminate={terminate}")

    async def on_accept(args: agents.JobAcceptArguments) -> None:
        said.append(f"accept {args.name}")

    job = agent.Job(id="AJ_test", type=agent.JobType.JT_ROOM, room=models.Room(name="r"))
    return agents.JobRequest(job=job, on_reject=on_reject, on_accept=on_accept), said


async def test_a_worker_with_room_and_time_accepts() -> None:
    state = MonitorState(max_rooms=2)
    req, said = request()
    await _on_request(state)(req)
    assert said == ["accept syncmon"]
    assert state.rooms_rejected == 0


async def test_a_full_worker_refuses_and_leaves_the_room_to_another() -> None:
    state = MonitorState(max_rooms=1)
    state.add_room("held")
    req, said = request()
    await _on_request(state)(req)
    assert said == ["reject terminate=False"]
    assert state.rooms_rejected == 1


async def test_a_worker_behind_its_pictures_refuses_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = MonitorState(max_rooms=8)
    state.overloaded_elsewhere = True  # a process of its pool reported a shed
    assert state.overloaded(time.monotonic())
    caplog.set_level(logging.WARNING, "syncmon")
    for n in (1, 2):
        req, said = request()
        await _on_request(state)(req)
        assert said == ["reject terminate=False"]
        assert state.rooms_rejected == n
    assert "refused a room: this worker's monitors are behind their pictures" in caplog.text
    state.overloaded_elsewhere = False
    req, said = request()
    await _on_request(state)(req)
    assert said == ["accept syncmon"]
