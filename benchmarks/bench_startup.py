"""The first picture that moves with the speech (start-up stage ``moving``) against its truth.

    python benchmarks/bench_startup.py [--cases 48] [--seed 1] [--codec] [--stepped]

Random avatars (cartoon and photographic faces; the reference mouth, a viseme mouth, a viseme
mouth on a nodding head; 15-30 fps; sender offsets -60..+100 ms), their video starting with
the audio or 2.3 s or 5.1 s after it, the mouth held shut for the first 4 or 8 s or not at all.
The truth is the avatar's own: the first frame whose instant the voice speaks in (10 ms above
-40 dBFS) with the mouth not held (``ReferenceAvatar.mouth_moves``). Frames and audio go
straight into the analyzer, or with ``--codec`` through H.264/AAC at 350 kbps
(``syncmon analyze``; video from the start only). ``--stepped``: every sender's offset also
steps by 60-150 ms either way 3-10 s in (its audio fell behind on a starved host, or caught
up), after the mouth started or while it is held, and a nodding head leads by 100-300 ms: the
mouth is located at the lag after the step. Prints each case and the share within one frame
(and 50 ms, 150 ms) per kind of start.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import feed_avatar  # noqa: E402

from syncmon.media import analyze_file  # noqa: E402
from syncmon.reference import Impairments, ReferenceAvatar, SpeechSource  # noqa: E402
from syncmon.reference.articulation import ArticulationConfig  # noqa: E402
from syncmon.reference.render import RenderOptions, render  # noqa: E402

DURATION_S = 30.0
MOUTHS = {
    "reference": None,
    "viseme": ArticulationConfig(tau_s=0.035, anticipation_s=0.0),
    "viseme+head": ArticulationConfig(
        tau_s=0.045, anticipation_s=0.025, head_px=5.0, head_roll_deg=2.5, head_lead_s=0.22
    ),
}


@dataclass(frozen=True)
class Case:
    face: str
    mouth: ArticulationConfig | None
    fps: int
    seed: int
    held: float  # the mouth held shut from the start for this long (0: not)
    offset: int
    step: tuple[float, float] | None = None  # (at s, ms): the offset steps by ms at at s

    def avatar(self) -> ReferenceAvatar:
        return ReferenceAvatar(
            fps=self.fps,
            impairments=Impairments(
                seed=self.seed,
                lip_still=((0.0, self.held),) if self.held else (),
                offset_ms=self.offset,
                offset_steps=() if self.step is None else (self.step,),
            ),
            speech=SpeechSource(
                seed=self.seed, consonants=self.mouth is not None, phrase_pause_s=(0.4, 1.5)
            ),
            articulation=self.mouth,
            renderer=self.face,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--codec", action="store_true", help="through H.264/AAC files")
    ap.add_argument(
        "--stepped",
        action="store_true",
        help="the sender's offset steps by 60-150 ms either way 3-10 s in (a starved avatar "
        "host), and a nodding head leads its speech by 100-300 ms",
    )
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="syncmon-startup-"))
    rows: list[tuple[str, float | None, float]] = []
    for i in range(args.cases):
        face = rng.choice(["synthetic", "synthetic", "photo"])
        mouth = rng.choice(list(MOUTHS))
        video_from = 0.0 if args.codec else rng.choice([0.0, 0.0, 2.3, 5.1])
        held = rng.choice([0.0, 0.0, 4.0, 8.0])
        offset = rng.choice([0, 100, -60])
        fps = rng.choice([25, 25, 15, 30])
        art = MOUTHS[mouth]
        step = None
        if args.stepped:
            step = (rng.uniform(3.0, 10.0), rng.choice([-1, 1]) * rng.uniform(60.0, 150.0))
            if art is not None and art.head_px:
                art = replace(art, head_lead_s=rng.uniform(0.1, 0.3))
        case = Case(face, art, fps, 1000 * args.seed + i, held, offset, step)
        twin = case.avatar()
        truth = next(
            f.pts
            for f in twin.frames(DURATION_S)
            if f.pts >= video_from and twin.mouth_moves(f.speech_t)
        )
        if args.codec:
            path = tmp / f"case{i}.mp4"
            render(case.avatar(), path, RenderOptions(duration_s=DURATION_S, video_bitrate=350_000))
            got = analyze_file(path).get("mouth_moving_s")
        else:
            got = feed_avatar(case.avatar(), DURATION_S, video_from).content.moving_at
        kind = "held shut" if held else ("video late" if video_from else "moving")
        err = None if got is None else (got - truth) * 1e3
        print(
            f"{i:3d} {face:9s} {mouth:11s} {fps:2d} fps  offset {offset:+4d} ms  video from "
            f"{video_from:3.1f} s  held {held:3.1f} s"
            + ("" if step is None else f"  step {step[1]:+4.0f} ms at {step[0]:4.1f} s")
            + (f"  lead {art.head_lead_s:.2f} s" if step and art and art.head_px else "")
            + f": truth {truth:6.3f} s, measured "
            + ("none" if got is None else f"{got:6.3f} s ({err:+.0f} ms)"),
            flush=True,
        )
        rows.append((kind, err, 1000.0 / fps))
    print("\nstart                  cases  within a frame  within 50 ms  within 150 ms  none")
    for kind in ("moving", "video late", "held shut", "all"):
        sel = [r for r in rows if kind in ("all", r[0])]
        if not sel:
            continue
        errs = [(abs(e), f) for _, e, f in sel if e is not None]
        print(
            f"{kind:22s} {len(sel):5d}  {sum(e <= f + 1e-6 for e, f in errs):14d}  "
            f"{sum(e <= 50 for e, _ in errs):12d}  {sum(e <= 150 for e, _ in errs):13d}  "
            f"{len(sel) - len(errs):4d}"
        )
    worst = [e for _, e, _ in rows if e is not None]
    if worst:
        print(
            f"errors: median {np.median(worst):+.0f} ms, "
            f"range {min(worst):+.0f}..{max(worst):+.0f} ms"
        )


if __name__ == "__main__":
    main()
