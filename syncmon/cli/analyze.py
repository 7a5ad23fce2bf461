"""``syncmon analyze FILE``: a recording through the analysis core, and its report as text."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import SyncmonError
from .args import Subparsers, add_calibration


def analyzer_config(args: argparse.Namespace) -> Any:
    from ..analysis import AnalyzerConfig, LipSyncConfig

    try:
        lip = LipSyncConfig(window_s=args.window_s, calibration_s=args.calibration_ms / 1000.0)
    except ValueError as e:
        raise SyncmonError(str(e)) from e
    return AnalyzerConfig(nominal_fps=args.fps, lipsync=lip, face=args.face)


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..media import analyze_file

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
        report = analyze_file(args.file, analyzer_config(args), progress=progress, turns=args.turns)
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

    v, off, conf, w = r["video"], r["offset_ms"], r["confidence"], r["content_windows"]
    lines = []
    if "file" in r:
        f = r["file"]
        lines.append(f"{f['path']}: {f['duration_s']:.1f} s, nominal {f['nominal_fps']} fps")
    lines += [
        f"lip-sync offset (content)   {ms(off['content'], 'low confidence')}   "
        f"confidence {conf['content']:.2f}   (+ = picture late)",
        f"content windows: {w['measured']} measured, {w['unmeasured']} with speech and no "
        f"offset, {w['no_speech']} without speech",
        f"lip-sync offset (timestamp) {ms(off['timestamp'], 'publisher not instrumented')}",
        f"lip-sync offset (playout)   {ms(off['playout'], 'no playout clock')}",
        "drift                       "
        + ("n/a" if r["drift_ms_per_min"] is None else f"{r['drift_ms_per_min']:+.2f} ms/min"),
        f"video frames {v['frames']}, dropped {v['dropped']}, duplicated {v['duplicated']}",
        f"freezes {v['freezes']} ({v['freeze_seconds']:.3f} s), pauses {v['pauses']}",
        f"jitter {v['jitter_ms']:.2f} ms (mean {v['jitter_avg_ms']:.2f} ms), fps {v['fps']}, "
        f"harmonic fps {v['harmonic_fps']}",
        f"audio gaps {r['audio']['gaps']} ({r['audio']['gap_seconds']:.3f} s)",
        f"mouth still while speaking {r['lip_still']['episodes']} times "
        f"({r['lip_still']['seconds']:.2f} s)",
        "face "
        + (
            "not looked for"
            if r["face"] is None
            else f"seen in {r['face']['frames']} frames"
            + ("" if r["face"]["share"] is None else f" ({100 * r['face']['share']:.0f} %)")
            + (f", {r['face']['errors']} failures" if r["face"]["errors"] else "")
        ),
        "mouth first moves with the speech at "
        + ("n/a" if r.get("mouth_moving_s") is None else f"{r['mouth_moving_s']:.2f} s"),
        f"verdict: {r['verdict']}",
    ]
    if "turns" in r:
        t = r["turns"]
        answers = ", ".join(f"{x:.3f}" for x in t["response_s"]["audio"]) or "none"
        stops = ", ".join("spoke on" if x is None else f"{x:.3f}" for x in t["interruption_stop_s"])
        lines.append(f"answered turns (s after the user stopped) {answers}")
        lines.append(
            f"interruptions {t['interruptions']}" + (f" (quiet after {stops} s)" if stops else "")
        )
    return "\n".join(lines)


def add_analyze(sub: Subparsers) -> None:
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
        "--turns",
        action="store_true",
        help="the recording also holds a user's voice (a second audio stream, or the right "
        "channel of a stereo one, the avatar's on the left): report how fast the avatar "
        "answered each turn and stopped when talked over",
    )
    add_calibration(a)
    a.set_defaults(func=cmd_analyze)
