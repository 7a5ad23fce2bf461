"""Faults of syncmon watch: bad URL, bad credentials, a missing track, SIGTERM, a room ending."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from syncmon.reference.localserver import LocalServer, free_port

from .conftest import Proc, lk_env, sample, scrape, start_monitor, start_publisher, wait_for

pytestmark = pytest.mark.slow


def run_watch(env: dict[str, str], *args: str, timeout: float = 30) -> tuple[int, str, float]:
    t = time.monotonic()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncmon.cli",
            "watch",
            "--metrics-addr",
            f"127.0.0.1:{free_port()}",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return p.returncode, p.stderr, time.monotonic() - t


def test_wrong_url_is_a_clear_error_within_10s(livekit: LocalServer) -> None:
    env = lk_env(livekit)
    env["LIVEKIT_URL"] = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    rc, err, took = run_watch(env, "--room", "x")
    assert rc == 2 and took <= 10.0, (rc, took)
    assert "cannot connect" in err or "timed out" in err
    assert "Traceback" not in err


def test_malformed_url_names_the_flag(livekit: LocalServer) -> None:
    rc, err, _ = run_watch(lk_env(livekit), "--room", "x", "--url", "localhost-no-scheme")
    assert rc == 2 and "--url" in err and "not a LiveKit URL" in err


def test_bad_secret_is_unauthorized_and_never_printed(livekit: LocalServer) -> None:
    env = lk_env(livekit)
    env["LIVEKIT_API_SECRET"] = "wrong-secret-wrong-secret-wrong-secret-99"
    rc, err, took = run_watch(env, "--room", "x")
    assert rc == 2 and "unauthorized" in err, err
    assert "wrong-secret" not in err and livekit.api_secret not in err
    assert took <= 10.0


def test_missing_credentials_are_named(livekit: LocalServer) -> None:
    env = {k: v for k, v in lk_env(livekit).items() if k != "LIVEKIT_API_SECRET"}
    rc, err, _ = run_watch(env, "--room", "x")
    assert rc == 2 and "--api-secret" in err


def test_voice_agent_and_user_are_not_avatars_an_avatar_without_video_is_down(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    """A voice agent (kind agent, audio only) and a user who sets ``lk.publish_on_behalf`` get
    no series (a voice agent paged as a dead avatar before); an avatar worker (kind agent,
    ``lk.publish_on_behalf``) that publishes no video has its video reported down. The monitor
    is ready all along: an idle room is not a reason to fail a readiness probe."""
    import json
    import urllib.error
    import urllib.request

    from livekit import rtc

    from syncmon.live.token import publisher_token

    room = "novideo"
    mon = start_monitor(procs, livekit, room)
    behalf = {"lk.publish_on_behalf": "voice-agent"}

    def ready() -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(mon.metrics_url + "/readyz", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    async def join(identity: str, *, agent: bool, attrs: dict[str, str] | None) -> rtc.Room:
        r = rtc.Room()
        tok = publisher_token(
            api_key=livekit.api_key,
            api_secret=livekit.api_secret,
            room=room,
            identity=identity,
            agent=agent,
            attributes=attrs,
        )
        await r.connect(livekit.url, tok)
        src = rtc.AudioSource(48000, 1)
        await r.local_participant.publish_track(
            rtc.LocalAudioTrack.create_audio_track("voice", src),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        return r

    async def scenario() -> None:
        wait_for(lambda: ready()[0] == 200, 20)  # connected, no avatar yet: ready
        voice = await join("voice-agent", agent=True, attrs=None)
        user = await join("a-user", agent=False, attrs=behalf)
        avatar = await join("mute-avatar", agent=True, attrs=behalf)

        def avatar_seen() -> bool:
            s = scrape(mon.metrics_url)
            return sample(s, "syncmon_track_up", participant="mute-avatar", kind="audio") == 1

        # (the SDK's loop must run meanwhile: wait in a thread)
        await asyncio.to_thread(wait_for, avatar_seen, 20)
        s = scrape(mon.metrics_url)
        assert sample(s, "syncmon_track_up", participant="mute-avatar", kind="video") == 0
        assert sample(s, "syncmon_av_offset_seconds", room=room) is None
        for who in ("voice-agent", "a-user"):
            assert not [k for k in s if ("participant", who) in k[1]], who
        code, body = ready()
        assert code == 200 and body["rooms"][room]["avatars"] == 1, body  # type: ignore[index]
        for r in (avatar, user, voice):
            await r.disconnect()

    asyncio.run(scenario())


def test_sigterm_exits_cleanly_within_2s(livekit: LocalServer, procs: Callable[..., Proc]) -> None:
    room = "sigterm"
    mon = start_monitor(procs, livekit, room)
    start_publisher(procs, livekit, room, "--duration", "30")
    wait_for(lambda: sample(scrape(mon.metrics_url), "syncmon_video_frames_total", room=room), 20)
    t = time.monotonic()
    mon.proc.send_signal(signal.SIGTERM)
    rc = mon.proc.wait(timeout=10)
    assert rc == 0 and time.monotonic() - t <= 2.0


def test_room_that_ends_has_its_series_removed(
    livekit: LocalServer, procs: Callable[..., Proc]
) -> None:
    from livekit import api

    room, other = "ending", "staying"
    mon = start_monitor(procs, livekit, room, other, extra=("--series-linger-s", "1"))
    start_publisher(procs, livekit, room, "--duration", "40")
    start_publisher(procs, livekit, other, "--duration", "40", identity="avatar-b")
    for r in (room, other):
        wait_for(
            lambda r=r: sample(scrape(mon.metrics_url), "syncmon_video_frames_total", room=r), 20
        )

    async def delete(name: str) -> None:
        async with api.LiveKitAPI(
            livekit.url.replace("ws://", "http://"), livekit.api_key, livekit.api_secret
        ) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))

    asyncio.run(delete(room))

    def gone() -> bool:
        s = scrape(mon.metrics_url)
        return not [k for k in s if ("room", room) in k[1]]

    # the ended room's every series goes after the linger; the other room is measured on
    wait_for(gone, timeout=20)
    s = scrape(mon.metrics_url)
    assert sample(s, "syncmon_room_connected", room=other) == 1
    assert sample(s, "syncmon_video_frames_total", room=other, participant="avatar-b")
    # once every room it watches has ended, the monitor exits by itself
    asyncio.run(delete(other))
    assert mon.proc.wait(timeout=20) == 0


def test_token_is_never_logged(livekit: LocalServer) -> None:
    from syncmon.live.token import monitor_token

    tok = monitor_token(api_key=livekit.api_key, api_secret="x" * 40, room="t", identity="m")
    env = {k: v for k, v in lk_env(livekit).items() if not k.startswith("LIVEKIT_API")}
    rc, err, _ = run_watch(env, "--room", "t", "--token", tok, "-v")
    assert rc == 2 and "unauthorized" in err
    assert tok not in err and tok[:40] not in err
