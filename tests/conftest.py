from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from syncmon.analysis import AnalyzerConfig, SyncAnalyzer
from syncmon.reference import ReferenceAvatar

ANALYSIS_RATE = 16000


def feed_avatar(
    avatar: ReferenceAvatar,
    duration_s: float,
    video_from: float = 0.0,
    an: SyncAnalyzer | None = None,
    **cfg: object,
) -> SyncAnalyzer:
    """Feed the avatar's frames and audio straight into an analyzer (no codec, no transport):
    ``an``, or a new one of ``cfg``.

    Audio goes in 20 ms chunks decimated 48 kHz -> 16 kHz, interleaved with the frames by time;
    frames before ``video_from`` s are left out (a picture that starts after the voice).
    """
    if an is None:
        an = SyncAnalyzer(AnalyzerConfig(**cfg), audio_rate=ANALYSIS_RATE)  # type: ignore[arg-type]
    sr = avatar.sample_rate
    chunk = int(0.02 * sr)
    pos = 0
    for f in avatar.frames(duration_s):
        while pos < (f.pts + 0.6) * sr and pos < duration_s * sr:
            x = avatar.audio(pos, chunk)
            an.add_audio(x.reshape(-1, 3).mean(axis=1), pos / sr)
            pos += chunk
        if f.pts >= video_from:
            an.add_video(f.pts, f.frame.y)
        avatar.speech.release_before(int((f.speech_t - 1.0) * sr))
    return an


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # every live test times real media through the server: scripts/test.sh runs them alone
    live = Path(__file__).parent / "live"
    for item in items:
        if live in item.path.parents:
            item.add_marker(pytest.mark.serial)


# a serial test that missed and ran again (scripts/test.sh): what it asserted, and the output
# it captured (the live tests' process logs, which their fixture prints as it stops them: the
# missed attempt's teardown), for the summary; pytest-rerunfailures keeps only the test's name
_missed_once: list[tuple[str, str]] = []
_teardown_owed: set[str] = set()


def _captured(report: pytest.TestReport) -> str:
    return "\n".join(f"--- {name}\n{text[-3000:]}" for name, text in report.sections)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.outcome == "rerun":
        _missed_once.append((report.nodeid, f"{report.longreprtext[-3000:]}\n{_captured(report)}"))
        _teardown_owed.add(report.nodeid)
    elif report.when == "teardown" and report.nodeid in _teardown_owed:
        _teardown_owed.discard(report.nodeid)
        i = max(i for i, (nodeid, _) in enumerate(_missed_once) if nodeid == report.nodeid)
        nodeid, text = _missed_once[i]
        # (the sections hold what the call captured too: the teardown's alone are new)
        new = [(name, out) for name, out in report.sections if "teardown" in name]
        _missed_once[i] = (nodeid, text + "\n" + "\n".join(f"--- {n}\n{o[-6000:]}" for n, o in new))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for nodeid, text in _missed_once:
        terminalreporter.write_sep("=", f"missed once, then run again: {nodeid}")
        terminalreporter.write_line(text)


@pytest.fixture
def rng() -> Iterator[np.random.Generator]:
    yield np.random.default_rng(1234)


# The LiveKit SDK's native runtime (loaded in process by the instrument tests) sometimes aborts
# while Python finalizes ("panic in a function that cannot unwind", SIGABRT), after every test
# has run and been reported: seen once in four runs of the instrument tests alone. syncmon's
# commands leave through os._exit for the same reason; the test run does too, with pytest's
# own exit status, once every plugin has written its output.
_exit_status: list[int] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status and "livekit.rtc" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
