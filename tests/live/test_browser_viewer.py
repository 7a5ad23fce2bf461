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

import pytest

from syncmon.live.localserver import LocalServer
from tests.browser.driver import UNSTABLE_MS, Session, browser_viewer, compare_session, page_ready

pytestmark = pytest.mark.slow

TRIES = 3  # sessions per offset before the browser's own instability fails the test
DEFAULT_TOL_MS = 8.0  # the browser plays what arrives: syncmon's as-received offset
SYNC_TOL_MS = 15.0  # the browser lip-syncs the pair, once converged


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
    unstable = []
    for i in range(TRIES):
        with browser_viewer() as v:
            s = compare_session(srv, v, f"{room}-{i}", sent_ms=sent_ms, **kw)
        # the harness itself: it matched the played sound to the source nearly throughout
        assert s.played.aligned_windows >= 0.8 * s.played.windows, s.played
        if s.stable:
            return s
        unstable.append(round(s.audio_range_ms, 1))
    pytest.fail(
        f"the browser's own audio delay moved > {UNSTABLE_MS} ms in every session: {unstable}"
    )


def check_pair(srv: LocalServer, room: str, tol_ms: float, **kw: Any) -> None:
    zero = stable_session(srv, f"{room}-0", 0.0, **kw)
    late = stable_session(srv, f"{room}-120", 120.0, **kw)
    # the browser measurement follows the sender's offset (each receiver's buffers differ by
    # session, by up to a NetEq step of 10 ms, and the two sessions are independent)
    assert abs((late.browser_ms - zero.browser_ms) - 120.0) <= 25.0, (zero, late)
    for s in (zero, late):
        assert abs(s.diff_ms) <= tol_ms, (s.sent_ms, s.browser_ms, s.content_ms, s.rows)


def test_default_server_content_is_what_the_browser_plays(livekit: LocalServer) -> None:
    check_pair(livekit, "browser-default", DEFAULT_TOL_MS, seconds=40, settle=20)


def test_sync_streams_content_is_what_the_browser_plays_once_converged(
    synced_server: LocalServer,
) -> None:
    # Chrome takes 30-100 s to converge: the session runs until it has (at most 180 s)
    check_pair(synced_server, "browser-synced", SYNC_TOL_MS, seconds=180, wait_sync=True)
