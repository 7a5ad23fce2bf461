"""Turns (analysis.turns) against scripted conversations: the figures README quotes.

    python benchmarks/bench_turns.py [--conversations 10]

For each microphone noise level, the error of every answer (measured minus the script's truth,
taken from the samples) over conversations of four turns each, and of the interruption's stop
time; then one conversation rendered to files (AAC in mp4, Opus in webm) and read back by
``syncmon analyze --turns``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_turns import SR, responses, run, stops  # noqa: E402

from syncmon.media import analyze_file  # noqa: E402
from syncmon.reference import ReferenceAvatar, SpeechSource  # noqa: E402
from syncmon.reference.conversation import conversation  # noqa: E402
from syncmon.reference.render import RenderOptions, render  # noqa: E402

DELAYS = (0.6, 0.9, 1.5, 0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=10)
    args = ap.parse_args()
    print(f"{args.conversations} conversations of {len(DELAYS)} turns, answers after {DELAYS} s")
    for noise in (None, -70.0, -62.0, -55.0, -50.0):
        errs: list[float] = []
        stop_errs: list[float] = []
        missed = 0
        for seed in range(20, 20 + args.conversations):
            user, avatar, truth = conversation(DELAYS, seed=seed, sr=SR)
            evs = run(user, avatar, user_noise_dbfs=noise)
            got = responses(evs)
            if len(got) != len(truth.responses_s):
                missed += 1
                continue
            errs += list(np.array(got) - np.array(truth.responses_s))
            stop_errs += [
                float(g - t)
                for g, t in zip(stops(evs), truth.interruption_stops_s, strict=True)
                if g is not None
            ]
        e = np.array(errs) * 1000
        s = np.abs(np.array(stop_errs)) * 1000
        label = "clean" if noise is None else f"hiss {noise:g} dBFS"
        print(
            f"  {label:>16}: answers {e.min():+.1f}..{e.max():+.1f} ms (mean {e.mean():+.1f}), "
            f"stops within {s.max():.1f} ms, conversations miscounted {missed}"
        )
    user, voice, truth = conversation(DELAYS[:3], stop_s=0.4, seed=5)
    with tempfile.TemporaryDirectory() as d:
        for ext, how in ((".mp4", "stream"), (".webm", "stereo")):
            path = Path(d) / f"c{ext}"
            av = ReferenceAvatar(width=320, height=240, speech=SpeechSource(script=voice))
            render(
                av, path, RenderOptions(duration_s=truth.duration_s), user_voice=user, user_as=how
            )
            t = analyze_file(path, turns=True)["turns"]
            e = (np.array(t["response_s"]["audio"]) - np.array(truth.responses_s)) * 1000
            print(
                f"  analyze {ext} ({how}): answers {np.round(e, 1).tolist()} ms off, "
                f"interruptions {t['interruptions']}, stop "
                f"{1000 * (t['interruption_stop_s'][0] - truth.interruption_stops_s[0]):+.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
