"""The worker's process pool without a server: one exposition from its processes', and the cores
it sizes itself to. (Children, dispatch and a child dying: tests/live/test_worker.py.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from syncmon import metric_names as n
from syncmon.analysis.session import SyncAnalyzer
from syncmon.live.pool import _parent_families, merge_expositions, usable_cores
from syncmon.live.state import AvatarState, MonitorState
from syncmon.metrics import MonitorCollector


def child_exposition(
    rooms: list[str], collect_errors: int, frames: int, behind_s: float = 0.0
) -> str:
    """What one child's /metrics says: its rooms, one avatar each, ``frames`` frames, each
    monitor ``behind_s`` behind its picture."""
    state = MonitorState(max_rooms=50)
    for r in rooms:
        rs = state.add_room(r)
        assert rs is not None
        rs.connected = True
        an = SyncAnalyzer()
        for k in range(frames):
            an.add_video_grid(k * 0.04, np.zeros((16, 16), np.float32))
        rs.avatars["av"] = AvatarState(room=r, participant="av", analyzer=an)
        rs.avatars["av"].frame_interval.observe(0.04)
        rs.avatars["av"].backlog_s = behind_s
    collector = MonitorCollector(state)
    collector.errors = collect_errors
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return generate_latest(reg).decode()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def merged_text(texts: list[str], parent: MonitorState, collect_errors: int = 0) -> str:
    up = GaugeMetricFamily(n.WORKER_PROCESS_UP, "up", labels=["process"])
    for i in range(len(texts)):
        up.add_metric([str(i)], 1.0)
    own = _parent_families(parent, [], up, collect_errors)

    class Static:
        def collect(self) -> Iterator[Metric]:
            yield from merge_expositions(texts, own)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Static())
    return generate_latest(reg).decode()


def test_the_processes_expositions_read_as_one_workers() -> None:
    a = child_exposition(["r1", "r2"], collect_errors=1, frames=30)
    b = child_exposition(["r3"], collect_errors=2, frames=12)
    parent = MonitorState(max_rooms=40)
    for r in ("r1", "r2", "r3"):
        parent.add_room(r)
    parent.rooms_rejected = 4
    text = merged_text([a, b], parent, collect_errors=5)
    got = samples(text)  # parses: one TYPE per family, a family's samples together

    def one(name: str, **labels: str) -> float:
        hits = [v for nm, lv, v in got if nm == name and labels.items() <= lv.items()]
        assert len(hits) == 1, (name, labels, hits)
        return hits[0]

    # every room once, with its own process's values
    for room, frames in (("r1", 30), ("r2", 30), ("r3", 12)):
        assert one(n.ROOM_CONNECTED, room=room) == 1.0
        assert one(n.VIDEO_FRAMES, room=room, participant="av") == frames
        assert one(n.VIDEO_FRAME_INTERVAL + "_count", room=room) == 1.0
    # the worker's own figures, not the processes' (whose caps would add up to 100)
    assert one(n.ROOMS) == 3
    assert one(n.ROOMS_MAX) == 40
    assert one(n.ROOMS_REJECTED) == 4
    # a process-wide counter is the sum: the processes' and the parent's own
    assert one(n.COLLECT_ERRORS) == 1 + 2 + 5
    assert one(n.WORKER_PROCESS_UP, process="0") == 1 and one(n.WORKER_PROCESS_UP, process="1") == 1
    # the text is valid exposition a Prometheus parses: each family's TYPE line once
    types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))


def test_the_worker_is_overloaded_as_its_parent_says_not_as_the_processes_add_up() -> None:
    """A process behind its pictures says 1, one in step 0; the worker's figure is its
    parent's (what it follows from the processes' /load), never their sum."""
    a = child_exposition(["r1"], collect_errors=0, frames=5, behind_s=1.5)
    b = child_exposition(["r2"], collect_errors=0, frames=5)
    assert (n.OVERLOADED, {}, 1.0) in samples(a) and (n.OVERLOADED, {}, 0.0) in samples(b)
    parent = MonitorState()
    for elsewhere in (True, False):
        parent.overloaded_elsewhere = elsewhere
        got = [v for nm, _, v in samples(merged_text([a, b], parent)) if nm == n.OVERLOADED]
        assert got == [1.0 if elsewhere else 0.0]


def test_a_room_two_processes_report_is_kept_once() -> None:
    a = child_exposition(["dup"], collect_errors=0, frames=20)
    b = child_exposition(["dup"], collect_errors=0, frames=7)
    got = samples(merged_text([a, b], MonitorState()))
    frames = [v for nm, lv, v in got if nm == n.VIDEO_FRAMES and lv.get("room") == "dup"]
    assert frames == [20.0]  # the first process's, never the two added up


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


@pytest.mark.parametrize(
    ("files", "cap"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: two processes, each busy part-time
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
        ({"cpu.max": "garbage\n"}, None),
    ],
)
def test_the_cores_a_worker_sizes_itself_to_follow_the_cgroup_quota(
    tmp_path: Path, files: dict[str, str], cap: int | None
) -> None:
    for rel, text in files.items():
        write(tmp_path, rel, text)
    affinity = len(os.sched_getaffinity(0))
    want = affinity if cap is None else min(affinity, cap)
    assert usable_cores(tmp_path) == want
