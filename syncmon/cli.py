"""The ``syncmon`` command: analyze, reference render, demo (and the live commands)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import SyncmonError

EXIT_USAGE = 2


def _span(text: str) -> tuple[float, float]:
    """START:DURATION in seconds, e.g. ``5:0.6``."""
    try:
        start, dur = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:DURATION in seconds (e.g. 5:0.6), got {text!r}"
        ) from None
    if start < 0 or dur <= 0:
        raise argparse.ArgumentTypeError(f"start must be >= 0 and duration > 0, got {text!r}")
    return start, dur


def add_impairment_args(p: argparse.ArgumentParser) -> None:
    """The reference avatar's impairment flags, shared by render, publish and the worker."""
    g = p.add_argument_group("impairments (read back as ground truth)")
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
    g.add_argument(
        "--freeze",
        type=_span,
        action="append",
        default=[],
        metavar="START:DUR",
        help="picture stands still for DUR seconds from START (repeatable)",
    )
    g.add_argument(
        "--audio-gap",
        type=_span,
        action="append",
        default=[],
        metavar="START:DUR",
        help="audio silenced for DUR seconds from START (repeatable)",
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


def impairments_from_args(args: argparse.Namespace) -> Any:
    from .reference import Impairments

    return Impairments(
        offset_ms=args.offset_ms,
        jitter_ms=args.jitter_ms,
        drop_rate=args.drop_rate,
        duplicate_rate=args.duplicate_rate,
        freezes=tuple(args.freeze),
        audio_gaps=tuple(args.audio_gap),
        clock_drift_ppm=args.clock_drift_ppm,
        processing_delay_ms=args.processing_delay_ms,
        seed=args.seed,
    )


def build_avatar(args: argparse.Namespace) -> Any:
    from .reference import ReferenceAvatar, SpeechSource

    imp = impairments_from_args(args)
    speech = SpeechSource(seed=args.seed + 1, wav=args.wav)
    try:
        return ReferenceAvatar(
            width=args.width, height=args.height, fps=args.fps, impairments=imp, speech=speech
        )
    except ValueError as e:
        raise SyncmonError(str(e)) from e


def _analyzer_config(args: argparse.Namespace) -> Any:
    from .analysis import AnalyzerConfig, LipSyncConfig

    try:
        lip = LipSyncConfig(window_s=args.window_s, calibration_s=args.calibration_ms / 1000.0)
    except ValueError as e:
        raise SyncmonError(str(e)) from e
    return AnalyzerConfig(nominal_fps=args.fps, lipsync=lip)


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .media import analyze_file

    bar = tqdm(
        total=0,
        unit="s",
        file=sys.stderr,
        disable=None,
        leave=False,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s",
    )

    def progress(t: float, total: float) -> None:
        if bar.total != round(total):
            bar.total = round(total)
        bar.n = min(t, total)
        bar.refresh()

    try:
        report = analyze_file(args.file, _analyzer_config(args), progress=progress)
    finally:
        bar.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def format_report(r: dict[str, Any]) -> str:
    """A readable summary of a report."""

    def ms(v: float | None, why: str) -> str:
        return f"n/a ({why})" if v is None else f"{v:+.1f} ms"

    v, off, conf = r["video"], r["offset_ms"], r["confidence"]
    lines = []
    if "file" in r:
        f = r["file"]
        lines.append(f"{f['path']}: {f['duration_s']:.1f} s, nominal {f['nominal_fps']} fps")
    lines += [
        f"lip-sync offset (content)   {ms(off['content'], 'low confidence')}   "
        f"confidence {conf['content']:.2f}   (+ = picture late)",
        f"lip-sync offset (timestamp) {ms(off['timestamp'], 'publisher not instrumented')}",
        f"lip-sync offset (playout)   {ms(off['playout'], 'no playout clock')}",
        "drift                       "
        + ("n/a" if r["drift_ms_per_min"] is None else f"{r['drift_ms_per_min']:+.2f} ms/min"),
        f"video frames {v['frames']}, dropped {v['dropped']}, duplicated {v['duplicated']}",
        f"freezes {v['freezes']} ({v['freeze_seconds']:.3f} s), pauses {v['pauses']}",
        f"jitter {v['jitter_ms']:.2f} ms (mean {v['jitter_avg_ms']:.2f} ms), fps {v['fps']}, "
        f"harmonic fps {v['harmonic_fps']}",
        f"audio gaps {r['audio']['gaps']} ({r['audio']['gap_seconds']:.3f} s)",
        f"verdict: {r['verdict']}",
    ]
    return "\n".join(lines)


def cmd_render(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .reference.render import RenderOptions, render

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
    """Render a reference clip with a known offset and analyze it (the offline demo)."""
    from .media import analyze_file
    from .reference import Impairments, ReferenceAvatar
    from .reference.render import RenderOptions, render

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncmon", description="Lip-sync and frame-timing monitor for AI avatars in LiveKit"
    )
    p.add_argument("--version", action="version", version=f"syncmon {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("analyze", help="analyze a recording (mp4, webm, mkv)")
    a.add_argument("file", type=Path)
    a.add_argument("--json", action="store_true", help="print the JSON report")
    a.add_argument(
        "--fps",
        type=float,
        default=None,
        help="nominal frame rate (default: the median frame interval)",
    )
    a.add_argument("--window-s", type=float, default=8.0, help="lip-sync window (default 8)")
    a.add_argument(
        "--calibration-ms",
        type=float,
        default=0.0,
        help="the avatar model's own fixed mouth offset, subtracted (default 0)",
    )
    a.set_defaults(func=cmd_analyze)

    ref = sub.add_parser("reference", help="the reference avatar").add_subparsers(
        dest="ref_command", required=True
    )
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

    d = sub.add_parser("demo", help="run syncmon on its reference avatar")
    d.add_argument("--offset-ms", type=float, default=80.0)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except SyncmonError as e:
        print(f"syncmon: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
