"""Content lip-sync on talking-avatar material it was not built on: accuracy per nuisance.

Renders a set of clips through real codecs (H.264/AAC, VP8/Opus) and runs ``analyze_file`` on
each, as ``syncmon analyze --json`` does. Every content is rendered at several sender offsets
and judged on changes (the estimate at each offset minus the estimate of the same content at
0 ms, against the offset), because a viseme mouth has a natural phase of its own. Nulls must
give no offset: a mouth frozen shut while the head nods with the speech, and a face that
follows another utterance than the audio.

    python benchmarks/bench_content.py                 # the full set (~5 min on 2 cores)
    python benchmarks/bench_content.py --quick         # one content per nuisance
    python benchmarks/bench_content.py --keep DIR      # keep (and reuse) the rendered clips
    python benchmarks/bench_content.py --portrait hopper   # the photographic contents on
                                                           # another portrait (never tuned on)
    python benchmarks/bench_content.py --seed 7        # other voices and articulations

Prints one line per clip and a table per nuisance: changes within 10 ms / 20 ms, p95 error,
nulls, lip-still seconds against the truth (and those clips' content: unshifted, so the
mouth's natural phase or null; WRONG beyond 60 ms, where a nodding head's lead lies).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from syncmon.analysis.lipsync import LipSyncConfig  # noqa: E402
from syncmon.media import analyze_file  # noqa: E402
from syncmon.reference import Impairments, ReferenceAvatar, SpeechSource  # noqa: E402
from syncmon.reference.articulation import ArticulationConfig  # noqa: E402
from syncmon.reference.avatar import speaking_seconds  # noqa: E402
from syncmon.reference.photo import PORTRAITS  # noqa: E402
from syncmon.reference.render import RenderOptions, render  # noqa: E402

SHIFTS_MS = (-160, -80, 0, 40, 120, 160)
DEFAULT_SEED = 2026
QUICK_SHIFTS_MS = (-120, 0, 80)


@dataclass(frozen=True)
class Content:
    """One piece of material: who speaks, how the face moves, how it is framed and coded."""

    name: str
    nuisance: str
    seed: int
    renderer: str = "synthetic"
    articulation: ArticulationConfig | None = None
    consonants: bool = True
    fps: float = 25.0
    size: tuple[int, int] = (640, 360)
    ext: str = ".mp4"
    bitrate: int = 400_000
    pauses: tuple[float, float] = (0.25, 0.6)
    exposure_step_s: float = 0.0
    lip_still: tuple[tuple[float, float], ...] = ()
    mismatched: bool = False
    null: bool = False
    shifts: tuple[int, ...] = field(default=SHIFTS_MS)


def _art(rng: np.random.Generator, head: bool) -> ArticulationConfig:
    return ArticulationConfig(
        tau_s=float(rng.uniform(0.030, 0.055)),
        anticipation_s=float(rng.uniform(0.0, 0.045)),
        head_px=float(rng.uniform(2.0, 6.0)) if head else 0.0,
        head_roll_deg=float(rng.uniform(0.5, 3.0)) if head else 0.0,
        head_lead_s=float(rng.uniform(0.10, 0.30)),
    )


def contents(quick: bool = False, seed: int = DEFAULT_SEED) -> list[Content]:
    """The set: ``seed`` draws the articulations and (off the default) the voices anew."""
    rng = np.random.default_rng(seed)
    off = 0 if seed == DEFAULT_SEED else 1000 * seed
    out: list[Content] = []
    per = 1 if quick else 2
    shifts = QUICK_SHIFTS_MS if quick else SHIFTS_MS
    for i in range(per):
        s = 100 + i + off
        out.append(Content(f"reference-{i}", "reference face", s, consonants=False, shifts=shifts))
        out.append(Content(f"viseme-{i}", "viseme mouth", s, articulation=_art(rng, False)))
        out.append(Content(f"head-{i}", "viseme + head motion", s, articulation=_art(rng, True)))
        out.append(
            Content(
                f"photo-{i}",
                "photo, head, idle, exposure",
                s,
                renderer="photo",
                articulation=_art(rng, True),
                pauses=(1.2, 3.0),
                exposure_step_s=6.0,
            )
        )
        out.append(
            Content(
                f"low-{i}",
                "photo, 15 fps VP8 150 kbps / 720p",
                s,
                renderer="photo",
                articulation=_art(rng, True),
                fps=15.0 if i == 0 else 30.0,
                size=(640, 360) if i == 0 else (1280, 720),
                ext=".webm",
                bitrate=150_000 if i == 0 else 1_200_000,
            )
        )
    out = [replace(c, shifts=shifts) for c in out]
    head = _art(rng, True)
    out.append(
        Content(
            "frozen",
            "null: mouth frozen, head nods",
            300 + off,
            articulation=head,
            lip_still=((0.0, 1e9),),
            null=True,
            shifts=(0,),
        )
    )
    out.append(
        Content(
            "frozen-photo",
            "null: mouth frozen, head nods",
            301 + off,
            renderer="photo",
            articulation=head,
            lip_still=((0.0, 1e9),),
            null=True,
            shifts=(0,),
        )
    )
    out.append(
        Content(
            "mismatch",
            "null: face follows another utterance",
            302 + off,
            articulation=head,
            mismatched=True,
            null=True,
            shifts=(0,),
        )
    )
    out.append(
        Content(
            "still-episodes",
            "lip-still episodes",
            303 + off,
            renderer="photo",
            articulation=_art(rng, True),
            lip_still=((6.0, 2.5), (14.0, 1.6)),
            shifts=(0,),
        )
    )
    out.append(
        Content(
            "still-synthetic",
            "lip-still episodes",
            304 + off,
            articulation=_art(rng, True),
            lip_still=((4.0, 1.5), (11.0, 3.0)),
            shifts=(0,),
        )
    )
    out.append(
        Content(
            "still-idle",
            "lip-still episodes",
            305 + off,
            renderer="photo",
            pauses=(1.5, 3.0),
            articulation=_art(rng, True),
            lip_still=((9.0, 2.0),),
            shifts=(0,),
        )
    )
    return out


def avatar_for(c: Content, shift_ms: int) -> ReferenceAvatar:
    imp = Impairments(
        offset_ms=shift_ms,
        seed=c.seed,
        lip_still=c.lip_still,
        exposure_step_s=c.exposure_step_s,
    )
    speech = SpeechSource(seed=c.seed, consonants=c.consonants, phrase_pause_s=c.pauses)
    face_speech = (
        SpeechSource(seed=c.seed + 5000, consonants=c.consonants, phrase_pause_s=c.pauses)
        if c.mismatched
        else None
    )
    return ReferenceAvatar(
        width=c.size[0],
        height=c.size[1],
        fps=c.fps,
        impairments=imp,
        speech=speech,
        articulation=c.articulation,
        face_speech=face_speech,
        renderer=c.renderer,
    )


def clip_path(d: Path, c: Content, shift: int) -> Path:
    return d / f"{c.name}_{shift:+d}{c.ext}"


def render_one(args: tuple[Content, int, str, float]) -> str:
    c, shift, d, duration = args
    path = clip_path(Path(d), c, shift)
    if not path.exists():
        tmp = path.with_name("tmp-" + path.name)
        render(
            avatar_for(c, shift), tmp, RenderOptions(duration_s=duration, video_bitrate=c.bitrate)
        )
        tmp.rename(path)
    return str(path)


def analyze_one(path: str) -> dict[str, Any]:
    return analyze_file(path)


def run(d: Path, items: list[Content], duration: float, workers: int) -> list[dict[str, Any]]:
    jobs = [(c, s, str(d), duration) for c in items for s in c.shifts]
    with ProcessPoolExecutor(workers) as ex:
        paths = list(ex.map(render_one, jobs))
        reports = list(ex.map(analyze_one, paths))
    rows = []
    for (c, s, _, _), rep in zip(jobs, reports, strict=True):
        rows.append({"content": c, "shift": s, "report": rep})
    return rows


def summarize(rows: list[dict[str, Any]], duration: float) -> list[str]:
    by: dict[str, dict[int, dict[str, Any]]] = {}
    contents_: dict[str, Content] = {}
    for r in rows:
        c = r["content"]
        by.setdefault(c.name, {})[r["shift"]] = r["report"]
        contents_[c.name] = c
    lines = []
    errors: dict[str, list[float]] = {}
    missing: dict[str, int] = {}
    nulls: list[str] = []
    still: list[str] = []
    for name, reps in by.items():
        c = contents_[name]
        base = reps[0]["offset_ms"]["content"]
        for s, rep in sorted(reps.items()):
            off = rep["offset_ms"]["content"]
            conf = rep["confidence"]["content"]
            ls = rep.get("lip_still", {})
            lines.append(
                f"  {name:<16} {s:+5d} ms  content {off!s:>7}  conf {conf:.2f}  "
                f"lip-still {ls.get('seconds', '-')} s / {ls.get('episodes', '-')}"
            )
            if c.null:
                nulls.append(f"{name}: {'null' if off is None else f'{off} ms (WRONG)'}")
            elif s != 0:
                if off is None or base is None:
                    missing[c.nuisance] = missing.get(c.nuisance, 0) + 1
                else:
                    errors.setdefault(c.nuisance, []).append(abs((off - base) - s))
            if c.lip_still:
                spans = tuple((t0, min(d_, duration - t0)) for t0, d_ in c.lip_still)
                # per freeze, as bench_lip_still: one the voice speaks through for less than
                # the counter's minimum (1 s) counts nothing by its definition
                truth = sum(
                    t
                    for t in (
                        speaking_seconds(
                            SpeechSource(
                                seed=c.seed, consonants=c.consonants, phrase_pause_s=c.pauses
                            ),
                            (span,),
                        )
                        for span in spans
                    )
                    if t > LipSyncConfig().still_min_s
                )
                got = ls.get("seconds")
                # unshifted: its content is the mouth's natural phase (tens of ms) or null,
                # never the head's lead (100-300 ms)
                phase = "null" if off is None else f"{off} ms{'' if abs(off) < 60 else ' (WRONG)'}"
                still.append(f"{name}: {got} s (truth {truth:.2f} s), content {phase}")
    lines.append("")
    lines.append(f"{'nuisance':<36}{'changes':>8}{'<=10 ms':>9}{'<=20 ms':>9}{'p95':>8}{'none':>6}")
    allerr: list[float] = []
    for nuis in dict.fromkeys(c.nuisance for c in contents_.values() if not c.null):
        e = np.asarray(errors.get(nuis, []))
        allerr += list(e)
        n = e.size + missing.get(nuis, 0)
        if n == 0:
            continue
        p95 = f"{np.percentile(e, 95):.1f}" if e.size else "-"
        lines.append(
            f"{nuis:<36}{n:>8}{int(np.sum(e <= 10)):>9}{int(np.sum(e <= 20)):>9}{p95:>8}"
            f"{missing.get(nuis, 0):>6}"
        )
    e = np.asarray(allerr)
    n = e.size + sum(missing.values())
    if n:
        lines.append(
            f"{'all':<36}{n:>8}{int(np.sum(e <= 10)):>9}{int(np.sum(e <= 20)):>9}"
            f"{(np.percentile(e, 95) if e.size else float('nan')):>8.1f}{sum(missing.values()):>6}"
        )
    lines.append("nulls: " + "; ".join(nulls))
    if still:
        lines.append("lip-still: " + "; ".join(still))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", type=Path, help="directory for the clips (kept, reused)")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", help="contents whose name starts with this")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    ap.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="draw other voices and articulations (the default set is the one README reports)",
    )
    ap.add_argument(
        "--portrait",
        default="photo",
        choices=sorted(PORTRAITS),
        help="the portrait of the photographic contents (hopper: one nothing was tuned on)",
    )
    args = ap.parse_args()
    items = [
        replace(c, name=c.name.replace("photo", args.portrait), renderer=args.portrait)
        if c.renderer == "photo"
        else c
        for c in contents(args.quick, args.seed)
    ]
    if args.only:
        items = [c for c in items if c.name.startswith(args.only)]
    t = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.keep or Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        rows = run(d, items, args.duration, args.workers)
    for line in summarize(rows, args.duration):
        print(line)
    print(f"({len(rows)} clips of {args.duration:g} s in {time.monotonic() - t:.0f} s)")
    if args.json:
        print(json.dumps([{**r, "content": r["content"].name} for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
