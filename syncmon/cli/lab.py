"""The lab's commands: ``syncmon reference render|publish|avatar`` and ``syncmon demo``. They
load ``syncmon.reference`` lazily: the product never imports the lab."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import SyncmonError
from .analyze import format_report
from .args import Subparsers, add_conn_args, lags, lk_credentials, span


def add_impairment_args(p: argparse.ArgumentParser) -> None:
    """The reference avatar's impairment and face flags, shared by render and publish."""
    _add_impairments(p.add_argument_group("impairments (read back as ground truth)"))
    _add_face_args(p.add_argument_group("face (calibrate with something like your own avatar)"))


def _span_arg(g: argparse._ArgumentGroup, flag: str, help: str) -> None:
    g.add_argument(flag, type=span, action="append", default=[], metavar="START:DUR", help=help)


def _add_impairments(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--offset-ms",
        type=float,
        default=0.0,
        help="A/V offset: positive makes the picture late (default 0)",
    )
    g.add_argument(
        "--jitter-ms", type=float, default=0.0, help="RFC 3550 video jitter to produce (default 0)"
    )
    g.add_argument("--drop-rate", type=float, default=0.0, help="share of frames dropped")
    g.add_argument("--duplicate-rate", type=float, default=0.0, help="share of frames repeated")
    _span_arg(g, "--freeze", "picture stands still for DUR seconds from START (repeatable)")
    _span_arg(g, "--audio-gap", "audio silenced for DUR seconds from START (repeatable)")
    _span_arg(
        g,
        "--audio-stall",
        "audio not sent for DUR seconds from START, as a stalled pipeline (live; repeatable)",
    )
    g.add_argument(
        "--clock-drift-ppm",
        type=float,
        default=0.0,
        help="video clock slower than audio by this many ppm",
    )
    g.add_argument(
        "--processing-delay-ms",
        type=float,
        default=0.0,
        help="generator delay per frame (live only; a file has no wall clock)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the speech and the schedule")
    g.add_argument("--wav", type=Path, default=None, help="speak this 16-bit WAV instead")
    _span_arg(
        g,
        "--lip-still",
        "mouth held shut for DUR seconds from START while the voice goes on (repeatable)",
    )


def _add_face_args(f: argparse._ArgumentGroup) -> None:
    f.add_argument(
        "--face",
        choices=("synthetic", "photo", "hopper"),
        default="synthetic",
        help="the cartoon face, or a photographic portrait: photo (scikit-image's astronaut) "
        "or hopper (matplotlib's Grace Hopper; both need the test extra)",
    )
    f.add_argument(
        "--viseme",
        action="store_true",
        help="a viseme-like mouth: formant-band opening, closures, 40 ms lips, 20 ms anticipation",
    )
    f.add_argument(
        "--head-motion-px",
        type=float,
        default=0.0,
        help="nods driven by the speech's prosody, peak pixels at 360p (0: none; try 4)",
    )
    f.add_argument("--head-roll-deg", type=float, default=0.0, help="speech-driven roll (try 2)")
    f.add_argument(
        "--head-lead-ms",
        type=float,
        default=200.0,
        help="the head moves this much ahead of the speech (default 200)",
    )


def impairments_from_args(args: argparse.Namespace) -> Any:
    from ..reference import Impairments

    return Impairments(
        offset_ms=args.offset_ms,
        jitter_ms=args.jitter_ms,
        drop_rate=args.drop_rate,
        duplicate_rate=args.duplicate_rate,
        freezes=tuple(args.freeze),
        audio_gaps=tuple(args.audio_gap),
        audio_stalls=tuple(getattr(args, "audio_stall", ())),
        clock_drift_ppm=args.clock_drift_ppm,
        processing_delay_ms=args.processing_delay_ms,
        lip_still=tuple(getattr(args, "lip_still", ())),
        seed=args.seed,
    )


def build_avatar(args: argparse.Namespace) -> Any:
    from ..reference import ReferenceAvatar, SpeechSource

    imp = impairments_from_args(args)
    try:
        art = None
        if args.viseme or args.head_motion_px or args.head_roll_deg:
            from ..reference.articulation import ArticulationConfig

            art = ArticulationConfig(
                viseme=args.viseme,
                head_px=args.head_motion_px,
                head_roll_deg=args.head_roll_deg,
                head_lead_s=args.head_lead_ms / 1000.0,
            )
        speech = SpeechSource(seed=args.seed + 1, wav=args.wav, consonants=args.viseme)
        return ReferenceAvatar(
            width=args.width,
            height=args.height,
            fps=args.fps,
            impairments=imp,
            speech=speech,
            articulation=art,
            renderer=args.face,
        )
    except (ValueError, ImportError) as e:
        raise SyncmonError(str(e)) from e


def cmd_render(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ..reference.render import RenderOptions, render

    avatar = build_avatar(args)
    try:
        opts = RenderOptions(
            duration_s=args.duration, video_bitrate=args.bitrate, lossless=args.lossless
        )
        truth = render(avatar, args.out, opts)
    except ValueError as e:
        raise SyncmonError(str(e)) from e
    t = asdict(truth)
    t.pop("dropped_slots")
    if args.truth:
        Path(args.truth).write_text(json.dumps(asdict(truth), indent=2))
    print(f"wrote {args.out}: {args.duration:g} s at {args.width}x{args.height}@{args.fps:g}")
    print("truth: " + json.dumps(t))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default: a local livekit-server, the reference avatar, the monitor."""
    if args.offline:
        return _demo_offline(args)
    import asyncio
    import subprocess

    from ..live.config import LiveKitCredentials, parse_addr
    from ..live.watch import WatchConfig, run_watch
    from ..logs import setup_logging
    from ..reference.localserver import LocalServer

    setup_logging(False)
    host, port = parse_addr(args.metrics_addr)
    print("starting livekit-server on 127.0.0.1 (loopback only)...", file=sys.stderr)
    srv = LocalServer.start()
    env = {
        **os.environ,
        "LIVEKIT_URL": srv.url,
        "LIVEKIT_API_KEY": srv.api_key,
        "LIVEKIT_API_SECRET": srv.api_secret,
    }
    pub_args = [
        "--offset-ms",
        str(args.offset_ms),
        "--video-lag-ms",
        "40",
        "--drop-rate",
        "0.01",
        "--freeze",
        "20:0.6",
        "--freeze",
        "50:0.6",
        "--otel-metrics-addr",
        args.agent_metrics_addr,
    ]
    if args.duration:
        pub_args += ["--duration", str(args.duration + 2)]
    pub = subprocess.Popen(
        [sys.executable, "-m", "syncmon.cli", "reference", "avatar", "--room", "demo", *pub_args],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    print(
        "reference avatar (livekit-agents AvatarRunner, instrumented) in room 'demo': its model "
        f"shows the mouth {args.offset_ms:+g} ms late, its synchronizer holds pictures 40 ms, "
        "1 % of pictures are lost and two 0.6 s freezes come at 20 s and 50 s. content = "
        "what a viewer sees; timestamp = the pipeline without the model's error. Avatar "
        f"metrics (OTel) on http://{args.agent_metrics_addr}/metrics; Ctrl-C stops",
        file=sys.stderr,
    )
    cfg = WatchConfig(
        creds=LiveKitCredentials(url=srv.url, api_key=srv.api_key, api_secret=srv.api_secret),
        rooms=("demo",),
        metrics_host=host,
        metrics_port=port,
        print_table=True,
    )

    async def main() -> int:
        stop = asyncio.Event()
        if args.duration:
            asyncio.get_running_loop().call_later(args.duration, stop.set)
        return await run_watch(cfg, stop=stop)

    try:
        return asyncio.run(main())
    finally:
        pub.terminate()
        try:
            pub.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pub.kill()
        srv.stop()


def _demo_offline(args: argparse.Namespace) -> int:
    """Render a reference clip with a known offset and analyze it."""
    from ..media import analyze_file
    from ..reference import Impairments, ReferenceAvatar
    from ..reference.render import RenderOptions, render

    with tempfile.TemporaryDirectory(prefix="syncmon-demo-") as d:
        out = Path(d) / "reference.mp4"
        imp = Impairments(offset_ms=args.offset_ms, drop_rate=0.02, freezes=((6.0, 0.6),))
        truth = render(ReferenceAvatar(impairments=imp), out, RenderOptions(duration_s=20.0))
        print(
            f"rendered a 20 s reference clip: offset {truth.offset_ms:+.0f} ms, "
            f"{truth.dropped} dropped frames, {truth.freezes} freeze of 0.6 s"
        )
        print(format_report(analyze_file(out)))
    return 0


def _publisher_creds(args: argparse.Namespace) -> tuple[Any, str]:
    """Credentials and a publisher token for ``--room`` / ``--identity`` (or the given token)."""
    from ..live.token import publisher_token

    creds = lk_credentials(args)
    token = creds.token or publisher_token(
        api_key=creds.api_key,
        api_secret=creds.api_secret,
        room=args.room,
        identity=args.identity,
    )
    return creds, token


def cmd_publish(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from ..logs import setup_logging
    from ..reference.publisher import ReferencePublisher

    setup_logging(False)
    logging.getLogger("syncmon.reference").setLevel(logging.INFO)  # its start-up and stalls
    creds, token = _publisher_creds(args)
    pub = ReferencePublisher(
        build_avatar(args),
        url=creds.url,
        token=token,
        clock_shift_s=args.clock_shift_s,
        audio_start_s=args.audio_start_s,
        video_start_s=args.video_start_s,
    )

    async def main() -> None:
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pub.stop)
        await pub.run(args.duration)

    asyncio.run(main())
    return 0


def cmd_conversation(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal
    import time

    from ..live.token import publisher_token
    from ..logs import setup_logging
    from ..reference import ReferenceAvatar, SpeechSource
    from ..reference.avatar import Impairments
    from ..reference.conversation import conversation
    from ..reference.publisher import ReferencePublisher

    setup_logging(False)
    logging.getLogger("syncmon.reference").setLevel(logging.INFO)
    try:
        user, voice, truth = conversation(
            tuple(d / 1000.0 for d in args.delays), stop_s=args.stop_ms / 1000.0, seed=args.seed
        )
    except ValueError as e:
        raise SyncmonError(str(e)) from e
    # the truth first, one JSON line, for whoever checks the monitor against it
    print(json.dumps({"truth": truth.__dict__}), flush=True)
    creds = lk_credentials(args)

    def token(identity: str, agent: bool) -> str:
        return publisher_token(
            api_key=creds.api_key,
            api_secret=creds.api_secret,
            room=args.room,
            identity=identity,
            agent=agent,
        )

    async def main() -> None:
        start = time.monotonic() + 3.0  # both connected and published by then
        logging.getLogger("syncmon.reference").info(
            "conversation starts at monotonic %.4f s", start
        )
        pubs = [
            ReferencePublisher(
                ReferenceAvatar(
                    width=args.width,
                    height=args.height,
                    fps=args.fps,
                    speech=SpeechSource(script=voice),
                    impairments=Impairments(offset_ms=args.offset_ms),
                ),
                url=creds.url,
                token=token(args.identity, True),
                start_at=start,
            ),
            ReferencePublisher(
                ReferenceAvatar(width=64, height=64, speech=SpeechSource(script=user)),
                url=creds.url,
                token=token(args.user_identity, False),
                video=False,
                start_at=start,
            ),
        ]

        def stop() -> None:
            for p in pubs:
                p.stop()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await asyncio.gather(*(p.run(args.duration) for p in pubs))

    asyncio.run(main())
    return 0


def cmd_avatar(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from ..logs import setup_logging

    setup_logging(args.verbose)
    from ..live.config import parse_addr
    from ..reference.worker import WorkerProfile, run_reference_avatar

    creds, token = _publisher_creds(args)
    profile = WorkerProfile(
        width=args.width,
        height=args.height,
        fps=args.fps,
        input_buffer=args.input_buffer,
        output_buffer=args.output_buffer,
        generator_delay_ms=args.generator_delay_ms,
        video_lag_ms=args.video_lag_ms,
        lag_period_s=args.lag_period_s,
        model_offset_ms=args.offset_ms,
        freezes=tuple(args.freeze),
        drop_rate=args.drop_rate,
        seed=args.seed,
    )
    tel = None
    if not args.no_instrument:
        from ..instrument import AvatarInstrumentor
        from ..instrument.export import configure

        tel = configure(
            otlp=args.otlp,
            prometheus_addr=(
                parse_addr(args.otel_metrics_addr, "--otel-metrics-addr")
                if args.otel_metrics_addr
                else None
            ),
        )
        AvatarInstrumentor().instrument(
            clock_shift_s=args.clock_shift_s, audio_tap=not args.no_audio_tap
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_reference_avatar(
            url=creds.url, token=token, profile=profile, duration_s=args.duration, stop=stop
        )

    try:
        asyncio.run(main())
    finally:
        if tel is not None:
            tel.shutdown()
    return 0


def _add_stream_args(p: argparse.ArgumentParser) -> None:
    """What the live reference avatars share: where they publish and their picture."""
    add_conn_args(p)
    p.add_argument("--room", required=True)
    p.add_argument("--identity", default="reference-avatar")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=float, default=25.0)


def add_render(ref: Subparsers) -> None:
    r = ref.add_parser("render", help="render the reference avatar to a file")
    r.add_argument("out", type=Path, help="output file: .mp4 (H.264/AAC), .webm (VP8/Opus), .mkv")
    r.add_argument("--duration", type=float, default=20.0, help="seconds (default 20)")
    r.add_argument("--width", type=int, default=640)
    r.add_argument("--height", type=int, default=360)
    r.add_argument("--fps", type=float, default=25.0)
    r.add_argument("--bitrate", type=int, default=300_000, help="video bits/s (default 300k)")
    r.add_argument("--lossless", action="store_true", help="FFV1 video (needs .mkv)")
    r.add_argument("--truth", type=Path, default=None, help="write the ground truth JSON here")
    add_impairment_args(r)
    r.set_defaults(func=cmd_render)


def add_publish(ref: Subparsers) -> None:
    pb = ref.add_parser("publish", help="publish the reference avatar live into a room")
    _add_stream_args(pb)
    pb.add_argument(
        "--clock-shift-s",
        type=float,
        default=0.0,
        help="shift the sender clock stamped into frames (tests clock independence)",
    )
    for kind in ("audio", "video"):
        pb.add_argument(
            f"--{kind}-start-s",
            type=float,
            default=0.0,
            help=f"send no {kind} for this long after the stream starts (a slow avatar "
            "start-up; the speech runs on meanwhile)",
        )
    add_impairment_args(pb)
    pb.set_defaults(func=cmd_publish)


def add_conversation(ref: Subparsers) -> None:
    cv = ref.add_parser(
        "conversation",
        help="publish a user and the reference avatar answering it after known delays, talked "
        "over once (prints the truth as a JSON line)",
    )
    add_conn_args(cv)
    cv.add_argument("--room", required=True)
    cv.add_argument("--identity", default="avatar", help="the avatar's identity")
    cv.add_argument("--user-identity", default="user")
    cv.add_argument(
        "--delays",
        type=lags,
        default=(600.0, 900.0, 1500.0),
        help="ms from each user turn's end to the avatar's answer (default 600,900,1500)",
    )
    cv.add_argument(
        "--stop-ms", type=float, default=400.0, help="talked over, the avatar stops this late"
    )
    cv.add_argument("--seed", type=int, default=5)
    cv.add_argument(
        "--offset-ms",
        type=float,
        default=0.0,
        help="the avatar's lip-sync offset: its picture this late (its mouth answers this much "
        "after its voice)",
    )
    cv.add_argument("--width", type=int, default=640)
    cv.add_argument("--height", type=int, default=360)
    cv.add_argument("--fps", type=float, default=25.0)
    cv.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    cv.set_defaults(func=cmd_conversation)


def add_avatar(ref: Subparsers) -> None:
    av = ref.add_parser(
        "avatar",
        help="run the reference avatar through livekit-agents' AvatarRunner, instrumented",
    )
    _add_stream_args(av)
    av.add_argument("--seed", type=int, default=1)
    av.add_argument("--input-buffer", type=int, default=0, help="chunks (0: unbounded)")
    av.add_argument("--output-buffer", type=int, default=3, help="frames rendered ahead")
    av.add_argument("--generator-delay-ms", type=float, default=0.0, help="model latency")
    av.add_argument(
        "--video-lag-ms",
        type=lags,
        default=(0.0,),
        help="sender pacing skew: pictures leave the synchronizer this much late; a comma "
        "list (e.g. 40,120) takes each in turn for --lag-period-s",
    )
    av.add_argument("--lag-period-s", type=float, default=10.0)
    av.add_argument(
        "--offset-ms",
        type=float,
        default=0.0,
        help="the model's own lip-sync error: the mouth shows the audio this late",
    )
    av.add_argument(
        "--freeze",
        type=span,
        action="append",
        default=[],
        metavar="START:DURATION",
        help="no pictures for DURATION s from START s (repeatable)",
    )
    av.add_argument("--drop-rate", type=float, default=0.0, help="pictures lost at random")
    av.add_argument(
        "--clock-shift-s",
        type=float,
        default=0.0,
        help="shift the sender clock stamped into frames and timing marks",
    )
    av.add_argument(
        "--otlp",
        action="store_true",
        help="export spans and metrics over OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    av.add_argument(
        "--otel-metrics-addr", default=None, help="serve the OTel metrics for Prometheus here"
    )
    av.add_argument("--no-instrument", action="store_true", help="run without syncmon.instrument")
    av.add_argument("-v", "--verbose", action="store_true")
    av.add_argument(
        "--no-audio-tap",
        action="store_true",
        help="estimate when the audio leaves instead of timing it on the published track",
    )
    av.set_defaults(func=cmd_avatar)


def add_demo(sub: Subparsers) -> None:
    d = sub.add_parser("demo", help="run syncmon on its reference avatar")
    d.add_argument("--offset-ms", type=float, default=60.0, help="injected offset (default 60)")
    d.add_argument("--metrics-addr", default="127.0.0.1:9464")
    d.add_argument(
        "--agent-metrics-addr",
        default="127.0.0.1:9465",
        help="where the instrumented avatar serves its OTel metrics",
    )
    d.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    d.add_argument(
        "--offline", action="store_true", help="render a clip and analyze it instead (no server)"
    )
    d.set_defaults(func=cmd_demo)
