"""Lip-still accounting against its truth (issue 11): clips of the viseme avatar with a nodding
head (cartoon and photographic faces) whose mouth freezes for 2-4 s while the voice goes on, and
clean clips, through ``syncmon analyze``. Per clip it prints the speaking seconds inside the
freezes (the truth), what was counted, and from when on frames were judged at all (the first
window that located the mouth; frames before it are never judged).

    python benchmarks/bench_lip_still.py            # 8 clips of 22 s (renders them once)
    python benchmarks/bench_lip_still.py --out DIR  # keep the clips in DIR
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncmon.analysis import lipsync  # noqa: E402
from syncmon.media import analyze_file  # noqa: E402
from syncmon.reference import Impairments, ReferenceAvatar, SpeechSource  # noqa: E402
from syncmon.reference.articulation import ArticulationConfig  # noqa: E402
from syncmon.reference.avatar import speaking_seconds  # noqa: E402
from syncmon.reference.render import RenderOptions, render  # noqa: E402

HEAD = ArticulationConfig(
    tau_s=0.045, anticipation_s=0.025, head_px=5.0, head_roll_deg=2.5, head_lead_s=0.22
)
CASES: list[tuple[str, int, tuple[tuple[float, float], ...]]] = [
    ("synthetic", 44, ((12.0, 3.5),)),
    ("photo", 45, ((8.0, 2.5),)),
    ("synthetic", 46, ((6.0, 2.0), (14.0, 4.0))),
    ("photo", 47, ((10.0, 3.0),)),
    ("synthetic", 48, ((5.0, 3.0), (15.0, 2.5))),
    ("photo", 49, ((13.0, 4.0),)),
    # frozen from the start: the mouth is never seen to move with the voice
    ("synthetic", 50, ((0.0, 1e9),)),
    ("photo", 51, ((0.0, 1e9),)),
    ("synthetic", 43, ()),
    ("photo", 41, ()),
]


def speech(seed: int) -> SpeechSource:
    return SpeechSource(seed=seed, consonants=True, phrase_pause_s=(0.4, 1.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=22.0)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="syncmon-lipstill-"))
    out.mkdir(parents=True, exist_ok=True)
    judged_from: list[float] = []
    real_still = lipsync.ContentOffsetEstimator._still

    def spy(self: lipsync.ContentOffsetEstimator, tk: np.ndarray, *a: np.ndarray) -> None:
        before = self._still_until
        real_still(self, tk, *a)
        if self._still_until > before and not judged_from:
            judged_from.append(float(tk[tk > before][0]))

    lipsync.ContentOffsetEstimator._still = spy  # type: ignore[method-assign]
    print("clip          freezes (start:dur s)   truth s  counted s  episodes  judged from s")
    for renderer, seed, spans in CASES:
        judged_from.clear()
        av = ReferenceAvatar(
            impairments=Impairments(seed=seed, lip_still=spans, exposure_step_s=7.0),
            speech=speech(seed),
            articulation=HEAD,
            renderer=renderer,
        )
        path = out / f"{renderer}{seed}.mp4"
        if not path.exists():
            render(av, path, RenderOptions(duration_s=args.seconds, video_bitrate=350_000))
        rep = analyze_file(path)
        inside = tuple((s, min(d, args.seconds - s)) for s, d in spans)
        truth = speaking_seconds(speech(seed), inside) if spans else 0.0
        ls = rep["lip_still"]
        frz = " ".join(f"{s:g}:{d:g}" for s, d in inside) or "-"
        jf = f"{judged_from[0]:.1f}" if judged_from else "never"
        print(
            f"{renderer + str(seed):13s} {frz:22s} {truth:8.2f} {ls['seconds']:9.2f} "
            f"{ls['episodes']:9d}  {jf:>12s}"
        )


if __name__ == "__main__":
    main()
