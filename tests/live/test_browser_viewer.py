"""``content`` against the real viewer of a LiveKit room: livekit-client (npm) in Debian's
Chromium, headless, subscribed to the same avatar as ``syncmon watch`` (tests/browser/).

What the browser plays is read without lip reading: the picture it shows carries its slot in
the reference avatar's timecode, and the sound its player pulls is aligned with the avatar's
deterministic speech, so the browser's played offset is exact up to its own buffers. Those
buffers move (headless Chrome's fake audio sink falls behind under load): a session whose own
audio delay moved more than 15 ms over every stretch of 10 s, or whose played sound the
harness could not follow, runs on for up to 30 s more to find one, and is otherwise run again
(one where it stepped once is compared over its longest steady stretch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from syncmon.reference.localserver import LocalServer
from tests.browser.driver import (
    UNSTABLE_MS,
    NotConverged,
    NotFollowed,
    Session,
    browser_viewer,
    compare_session,
    page_ready,
)

# Two receivers of one stream, each with its own jitter buffers, on a shared 2-core host: a
# session's truth is the browser's own playout, which a busy moment moves (NetEq steps of
# 20-70 ms in either receiver), and each test holds several sessions to bounds a few ms wide.
# A miss (an assertion) runs the test again, twice at most, where the other serial tests run
# once more (scripts/test.sh); the summary lists every rerun with what it asserted.
pytestmark = [pytest.mark.slow, pytest.mark.flaky(reruns=2, only_rerun=["AssertionError"])]

# sessions per offset before the browser's own instability fails the test: a loaded host's
# headless Chrome was unsteady in 3 sessions in a row once (audio delay moved 39 and 17 ms, its
# sound followed in 15 of 36 windows); a steady session costs no retry
TRIES = 5
# The browser plays what arrives, and so does syncmon's receiver: content - browser is each
# receiver's own A/V buffering against the other's. Each holds the sound for whole 10 ms
# playout pulls at a phase random per session, and each NetEq picks its target delay in 10 ms
# steps: measured over 25 default-server sessions, content - browser +4.9 ms on average (sd
# 5.3 ms); over the 8 where both receivers' buffers were read, the difference followed the
# monitor's own A/V buffer difference (receiver_bias_ms -26 ms: -2 and -0.4 ms; -15...-18 ms:
# +4...+15 ms) while the browser's held. The goal (content within 8 ms on average) is held on
# the mean over six sessions, to 10 ms: one NetEq step, 2.4 of the mean's standard deviations
# above what was measured (the failure this guards against, syncmon subtracting its own
# buffers where viewers do not, was 13-22 ms in every session).
DEFAULT_TOL_MS = 10.0
DEFAULT_REPEATS = 3  # sessions per offset
EXTRA_REPEATS = 2  # more per offset when their mean is past the bound
# One session: two receivers of one stream each play it through their own jitter buffers, and
# those move independently (a CI run: the browser's NetEq shed 30 ms of audio delay
# mid-session while the monitor's held, content - browser -30 ms), so a session is compared
# with each receiver's own A/V buffering taken out (driver.stream_level): what is left, less
# its mean over the sessions (a constant of the two definitions), is what the estimator got
# wrong plus the two receivers' 10 ms playout pull phases (8 sessions: within 6.5 ms of their
# mean, where content - browser itself spread over -12.6...+13.1 ms).
SESSION_TOL_MS = 15.0
# With sync_streams the browser lip-syncs the pair, but libwebrtc's StreamSynchronization only
# corrects an A/V difference whose filtered value is at least kMinDeltaMs = 30 ms, by half of
# it per step: each viewer settles somewhere within 30 ms of the sender's offset, where its own
# first estimate left it (measured over 11 sessions: browser - sent -15...+24 ms, content -
# browser -19...+20 ms, mean +5 ms). syncmon reports the centre of that band.
SYNC_DEADBAND_MS = 30.0
# what separates the sender's configured offset from the pair a synced viewer lines up: the
# publisher's own A/V send skew and capture-to-arrival differences on loopback (content -
# sent measured +4...+9 ms over those 11 sessions)
SYNC_TRANSPORT_MS = 15.0


@pytest.fixture(scope="module", autouse=True)
def browser_ready() -> None:
    why = page_ready()
    if why:
        pytest.fail(f"the browser viewer cannot run: {why}")


@pytest.fixture(scope="module")
def synced_server() -> Iterator[LocalServer]:
    srv = LocalServer.start(build=False, sync_streams=True)
    try:
        yield srv
    finally:
        srv.stop()


def stable_session(
    srv: LocalServer, room: str, sent_ms: float, tries: int = TRIES, **kw: Any
) -> Session:
    unstable: list[str] = []
    for i in range(tries):
        with browser_viewer() as v:
            try:
                s = compare_session(srv, v, f"{room}-{i}", sent_ms=sent_ms, **kw)
            except NotConverged as e:  # Chrome's own sync, not syncmon: counted, run again
                unstable.append(str(e))
                continue
            except NotFollowed as e:  # the played sound never matched: the browser starved
                unstable.append(str(e))
                continue
        # the harness itself must follow the played sound (headless Chrome's fake sink
        # skipped: one CI run read -850 ms in 42 of 93 windows): a session where it could not,
        # or where the browser's own audio delay moved, is the browser's, run again
        if s.stable:
            return s
        unstable.append(
            f"browser audio delay moved {s.audio_range_ms:.1f} ms, its sound followed for "
            f"{s.followed:.0%} of the pictures compared ({s.ran_s:.0f} s run)"
        )
    pytest.fail(
        f"no session where the browser itself held steady ({UNSTABLE_MS} ms) and its sound "
        f"was followed: {unstable}"
    )


def table(sessions: list[Session]) -> str:
    """The sessions side by side, for a failure message."""
    rows = [
        f"sent {s.sent_ms:+.0f}: browser {s.browser_ms:+.1f} content {s.content_ms:+.1f} "
        f"diff {s.diff_ms:+.1f} ms, less both receivers' buffers {s.stream_diff_ms:+.1f} ms; "
        "browser/content/syncmon bias/browser audio/browser video: "
        + ", ".join(
            f"{r[0]:.0f}s {r[1]:+.0f}/{r[2]:+.0f}/{r[4]:+.0f}/{r[5]:.0f}/{r[6]:.0f}" for r in s.rows
        )
        for s in sessions
    ]
    return "\n".join(rows)


def run_sessions(
    srv: LocalServer, room: str, repeats: int, **kw: Any
) -> dict[float, list[Session]]:
    return {
        sent: [stable_session(srv, f"{room}-{i}-{sent:.0f}", sent, **kw) for i in range(repeats)]
        for sent in (0.0, 120.0)
    }


def test_default_server_content_is_what_the_browser_plays(livekit: LocalServer) -> None:
    kw: dict[str, Any] = {"seconds": 40, "settle": 20}
    runs = run_sessions(livekit, "browser-default", DEFAULT_REPEATS, **kw)
    if abs(float(np.mean([s.diff_ms for ss in runs.values() for s in ss]))) > DEFAULT_TOL_MS:
        # Six sessions' mean has a standard error of ~3 ms (one CI run: +19, +2, -0, +14, +20,
        # +8 ms, mean 10.5): a mean past the bound is judged again over ten sessions (~2 ms),
        # where the failure this guards against (13-22 ms in every session) still fails
        more = run_sessions(livekit, "browser-default-more", EXTRA_REPEATS, **kw)
        runs = {sent: runs[sent] + more[sent] for sent in runs}
    sessions = [s for ss in runs.values() for s in ss]
    # the browser measurement follows the sender's offset
    played = {sent: float(np.mean([s.browser_ms for s in ss])) for sent, ss in runs.items()}
    assert abs(played[120.0] - played[0.0] - 120.0) <= 20.0, table(sessions)
    diffs = [s.diff_ms for s in sessions]
    assert abs(float(np.mean(diffs))) <= DEFAULT_TOL_MS, table(sessions)
    # each session, its receivers' own buffers taken out, against the sessions' mean
    level = float(np.mean([s.stream_diff_ms for s in sessions]))
    assert max(abs(s.stream_diff_ms - level) for s in sessions) <= SESSION_TOL_MS, table(sessions)


def test_sync_streams_content_is_what_the_browser_plays_once_converged(
    synced_server: LocalServer,
) -> None:
    # Chrome takes 30-100 s to converge: each session runs until it has (at most 150 s; a
    # session where it did not is run again, as one where its audio delay moved)
    # (3 tries per run: a session may wait 150 s, and a host too busy for the browser's sync
    # to settle in 3 sessions did not in 5 either)
    runs = run_sessions(synced_server, "browser-synced", 1, seconds=150, wait_sync=True, tries=3)
    sessions = [s for ss in runs.values() for s in ss]
    for s in sessions:
        # the browser lip-synced the pair: it plays the sender's offset, within its deadband
        assert abs(s.browser_ms - s.sent_ms) <= SYNC_DEADBAND_MS + SYNC_TRANSPORT_MS, table(
            sessions
        )
        # syncmon's content: the sender's offset as a synced viewer plays it
        assert abs(s.content_ms - s.sent_ms) <= SYNC_TRANSPORT_MS, table(sessions)
        assert abs(s.diff_ms) <= SYNC_DEADBAND_MS, table(sessions)
