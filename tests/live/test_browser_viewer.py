"""``content`` against the real viewer of a LiveKit room: livekit-client (npm) in Debian's
Chromium, headless, subscribed to the same avatar as ``syncmon watch`` (tests/browser/).

What the browser plays is read without lip reading: the picture it shows carries its slot in
the reference avatar's timecode, and the sound its player pulls is aligned with the avatar's
deterministic speech, so the browser's played offset is exact up to its own buffers. Those
buffers move (headless Chrome's fake audio sink falls behind under load): a session whose own
audio delay moved more than 15 ms is not compared, and is run again.
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
    Session,
    browser_viewer,
    compare_session,
    page_ready,
)

pytestmark = pytest.mark.slow

TRIES = 3  # sessions per offset before the browser's own instability fails the test
DEFAULT_TOL_MS = 8.0  # the browser plays what arrives: syncmon's as-received offset
SYNC_TOL_MS = 15.0  # the browser lip-syncs the pair, once converged
# One session's difference is not only syncmon's: each receiver's NetEq holds the sound for a
# whole number of its own 10 ms playout pulls after the packet lands, at a phase that is random
# per session and independent between the two receivers (measured: content - browser had a
# standard deviation of ~5 ms over 13 default-server sessions, largest 11.9 ms). What is
# systematic shows in the mean over sessions.
SESSION_TOL_MS = 15.0


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


def stable_session(srv: LocalServer, room: str, sent_ms: float, **kw: Any) -> Session:
    unstable: list[str] = []
    for i in range(TRIES):
        with browser_viewer() as v:
            try:
                s = compare_session(srv, v, f"{room}-{i}", sent_ms=sent_ms, **kw)
            except NotConverged as e:  # Chrome's own sync, not syncmon: counted, run again
                unstable.append(str(e))
                continue
        # the harness itself: it matched the played sound to the source nearly throughout
        assert s.played.aligned_windows >= 0.8 * s.played.windows, s.played
        if s.stable:
            return s
        unstable.append(f"browser audio delay moved {s.audio_range_ms:.1f} ms")
    pytest.fail(f"no session where the browser itself held steady ({UNSTABLE_MS} ms): {unstable}")


def check(srv: LocalServer, room: str, repeats: int, tol_ms: float, **kw: Any) -> None:
    """``repeats`` sessions at 0 and at +120 ms: the mean of content - browser within
    ``tol_ms`` (what is systematic), each session within SESSION_TOL_MS."""
    runs = {
        sent: [stable_session(srv, f"{room}-{i}-{sent:.0f}", sent, **kw) for i in range(repeats)]
        for sent in (0.0, 120.0)
    }
    # the browser measurement follows the sender's offset
    played = {sent: float(np.mean([s.browser_ms for s in ss])) for sent, ss in runs.items()}
    assert abs(played[120.0] - played[0.0] - 120.0) <= 20.0, played
    sessions = [s for ss in runs.values() for s in ss]
    diffs = [round(s.diff_ms, 1) for s in sessions]
    assert abs(float(np.mean(diffs))) <= tol_ms, diffs
    assert max(abs(d) for d in diffs) <= SESSION_TOL_MS, [(s.sent_ms, s.rows) for s in sessions]


def test_default_server_content_is_what_the_browser_plays(livekit: LocalServer) -> None:
    check(livekit, "browser-default", 2, DEFAULT_TOL_MS, seconds=40, settle=20)


def test_sync_streams_content_is_what_the_browser_plays_once_converged(
    synced_server: LocalServer,
) -> None:
    # Chrome takes 30-100 s to converge: each session runs until it has (at most 150 s; a
    # session where it did not is run again, as one where its audio delay moved)
    check(synced_server, "browser-synced", 1, SYNC_TOL_MS, seconds=150, wait_sync=True)
