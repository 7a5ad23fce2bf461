"""Lip-still accounting against its truth (issue 11): clips of the viseme avatar with a nodding
head (cartoon and photographic faces) whose mouth freezes for 2-4 s while the voice goes on, and
clean clips, through ``syncmon analyze``. Per clip it prints the speaking seconds inside the
freezes (the truth), what was counted, and from when on frames were judged at all (the first
window that located the mouth; frames before it are never judged).

    python benchmarks/bench_lip_still.py            # 8 clips of 22 s (renders them once)
    python benchmarks/bench_lip_still.py --out DIR  # keep the clips in DIR
    python benchmarks/bench_lip_still.py --random 12 --seed 5  # a random set of avatars
    python benchmarks/bench_lip_still.py --random 16 --seed 5 --frames  # and frame by frame
    python benchmarks/bench_lip_still.py --random 16 --seed 5 --portrait hopper
        # the same draw, its photographic clips on a portrait nothing was tuned on
    python benchmarks/bench_lip_still.py --random 16 --seed 5 --offset 200
        # the same draw with every picture 200 ms late (its own renders)

``--frames`` also judges each speaking frame against the freezes: those inside one that read
as moving, those outside that read as still, near an edge (0.2 s) or not. A clip's seconds
mix that with the counter's own definitions (its speech level, its 1 s minimum); the frames
tell how a change moves the edges.

``--random N`` draws N clips instead of the fixed ten: cartoon or photographic face, 360p or
720p, 15/25/30 fps, H.264 or VP8 at 150-1200 kbps, a viseme mouth (time constant 30-55 ms,
anticipation 0-45 ms) on a head nodding 2-6 px and rolling 0.5-3 degrees 100-300 ms ahead of
the speech, and none, one or two freezes of 1.5-4 s, or a mouth frozen from the start.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncmon.analysis import lipstill, lipsync  # noqa: E402
from syncmon.media import analyze_file  # noqa: E402
from syncmon.reference import Impairments, ReferenceAvatar, SpeechSource  # noqa: E402
from syncmon.reference.articulation import ArticulationConfig  # noqa: E402
from syncmon.reference.avatar import speaking_seconds  # noqa: E402
from syncmon.reference.photo import PORTRAITS  # noqa: E402
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


@dataclass
class Case:
    renderer: str
    seed: int
    spans: tuple[tuple[float, float], ...]
    articulation: ArticulationConfig = HEAD
    size: tuple[int, int] = (640, 360)
    fps: float = 25.0
    ext: str = ".mp4"
    bitrate: int = 350_000

    tag: str = ""  # a drawn clip's variant (``--freezes``): its render's name
    offset_ms: float = 0.0  # the picture this late against the voice (``--offset``)

    @property
    def name(self) -> str:
        late = f"-late{self.offset_ms:+g}ms" if self.offset_ms else ""
        return f"{self.renderer}{self.seed}{self.tag}{late}"


def random_cases(n: int, seed: int, seconds: float) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        kind = rng.choice(["none", "one", "one", "two", "start"])
        spans: tuple[tuple[float, float], ...] = ()
        if kind == "start":
            spans = ((0.0, 1e9),)
        elif kind != "none":
            first = rng.uniform(4.0, seconds / 2 - 2.0)
            spans = ((round(first, 1), round(rng.uniform(1.5, 4.0), 1)),)
            if kind == "two":
                second = rng.uniform(first + spans[0][1] + 2.0, seconds - 3.0)
                spans += ((round(second, 1), round(rng.uniform(1.5, 3.0), 1)),)
        out.append(
            Case(
                renderer=str(rng.choice(["synthetic", "photo"])),
                seed=seed * 1000 + k,
                spans=spans,
                articulation=ArticulationConfig(
                    tau_s=float(rng.uniform(0.03, 0.055)),
                    anticipation_s=float(rng.uniform(0.0, 0.045)),
                    head_px=float(rng.uniform(2.0, 6.0)),
                    head_roll_deg=float(rng.uniform(0.5, 3.0)),
                    head_lead_s=float(rng.uniform(0.1, 0.3)),
                ),
                size=((640, 360), (1280, 720))[int(rng.random() < 0.3)],
                fps=float(rng.choice([15.0, 25.0, 30.0])),
                ext=str(rng.choice([".mp4", ".webm"])),
                bitrate=int(rng.choice([150_000, 350_000, 700_000, 1_200_000])),
            )
        )
    return out


def parse_freezes(ap: argparse.ArgumentParser, text: str) -> tuple[tuple[float, float], ...]:
    if text == "none":
        return ()
    if text == "start":
        return ((0.0, 1e9),)
    try:
        spans = tuple(
            (float(a), float(b)) for a, b in (part.split(":") for part in text.split(","))
        )
    except ValueError:
        ap.error(f"--freezes {text!r}: expected start:duration[,start:duration...] in seconds")
    if any(a < 0 or b <= 0 for a, b in spans):
        ap.error(f"--freezes {text!r}: a start must be >= 0 and a duration > 0")
    return spans


def spy_trace(span: tuple[float, float]) -> None:
    """Print each frame judged within ``span`` as it is judged (wraps the estimator's own
    methods: the face's motion and level are the window's that judged the frame)."""
    est_cls = lipsync.ContentOffsetEstimator
    real_still, real_frozen, real_face_still = (
        lipstill.StillAccount.judge,
        est_cls._face_frozen,
        est_cls._face_still,
    )
    face: dict[float, tuple[float, float]] = {}  # frame time: (motion, level) of this window
    # where the frames being judged were judged: on the window's own face (before the mouth
    # is located) or at the located mouth
    where = ["window"]

    def face_still(self: Any, f: Any, at: Any, env: Any, wenv: Any, final: bool = False) -> None:
        tf, motion = f.t, f.motion
        level = lipsync.speech_level(wenv)
        lv = lipsync.window_still_level(motion, lipsync._speaking(tf, at, env, level))
        face.clear()
        face.update({float(t): (float(m), lv) for t, m in zip(tf, motion, strict=True)})
        where[0] = "window"
        real_face_still(self, f, at, env, wenv, final)

    def face_frozen(self: Any, f: Any, tk: np.ndarray) -> Any:
        face.clear()
        if f is not None and self._face_usual is not None:
            lv = lipsync.FACE_STILL * self._face_usual
            face.update({float(t): (float(m), lv) for t, m in zip(f.t, f.motion, strict=True)})
        where[0] = "located"
        return real_frozen(self, f, tk)

    def still(
        self: Any, tk: np.ndarray, st: np.ndarray, edge: Any, sp: np.ndarray, *a: Any, **kw: Any
    ) -> None:
        before = self.judged_until
        real_still(self, tk, st, edge, sp, *a, **kw)
        change = kw.get("change", a[1] if len(a) > 1 else None)
        head = kw.get("head", a[2] if len(a) > 2 else None)
        for i in np.nonzero((tk > before) & (tk <= self.judged_until))[0]:
            t = float(tk[i])
            if not span[0] <= t <= span[1]:
                continue
            m, lv = face.get(t, (np.nan, np.nan))
            c = np.nan if change is None else float(change[i])
            h = np.nan if head is None else float(head[i])
            print(
                f"  t {t:7.3f}  speaking {int(sp[i])}  still {int(st[i])}  motion {m:8.1f}  "
                f"level {lv:7.1f} ({where[0]})  change {c:8.1f}  head {h:5.2f}"
            )

    est_cls._face_still = face_still  # type: ignore[method-assign]
    est_cls._face_frozen = face_frozen  # type: ignore[method-assign]
    lipstill.StillAccount.judge = still  # type: ignore[method-assign]


def parse_trace(ap: argparse.ArgumentParser, text: str) -> tuple[float, float]:
    try:
        t0, t1 = (float(x) for x in text.split(":"))
    except ValueError:
        ap.error(f"--trace {text!r}: expected T0:T1 in seconds")
    if not t1 > t0:
        ap.error(f"--trace {text!r}: T1 must be after T0")
    return t0, t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=22.0)
    ap.add_argument("--random", type=int, default=0, metavar="N")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frames", action="store_true", help="also count frames judged wrong")
    ap.add_argument(
        "--portrait",
        default="photo",
        choices=sorted(PORTRAITS),
        help="the portrait of the photographic clips (same draw; hopper: never tuned on)",
    )
    ap.add_argument(
        "--clip",
        type=int,
        default=None,
        metavar="K",
        help="only the K-th clip of the draw (from 0; with --random)",
    )
    ap.add_argument(
        "--freezes",
        default=None,
        metavar="SPANS",
        help="with --clip: the same avatar, picture and codec with these freezes instead "
        "(start:duration,...; 'none'; 'start': frozen from the start)",
    )
    ap.add_argument(
        "--trace",
        default=None,
        metavar="T0:T1",
        help="with --clip: each frame judged between T0 and T1 s, as judged: speaking, still, "
        "the face's mouth motion and the level it was judged against, the mouth's change",
    )
    ap.add_argument(
        "--offset",
        type=float,
        default=0.0,
        metavar="MS",
        help="every clip's picture this many ms late against its voice (negative: early); "
        "the freezes and their truth stay on the voice's time",
    )
    args = ap.parse_args()
    if (args.clip is not None and not args.random) or (
        (args.freezes or args.trace) and args.clip is None
    ):
        ap.error("--clip needs --random, and --freezes and --trace need --clip")
    trace = parse_trace(ap, args.trace) if args.trace else None
    cases = (
        random_cases(args.random, args.seed, args.seconds)
        if args.random
        else [Case(r, seed, spans) for r, seed, spans in CASES]
    )
    if args.clip is not None:
        if not 0 <= args.clip < len(cases):
            ap.error(f"--clip {args.clip}: the draw has clips 0-{len(cases) - 1}")
        cases = [cases[args.clip]]
        if args.freezes is not None:
            cases[0].spans = parse_freezes(ap, args.freezes)
            cases[0].tag = "-" + args.freezes.replace(":", "_").replace(",", "-")
    for c in cases:
        if c.renderer == "photo":
            c.renderer = args.portrait
        c.offset_ms = args.offset
    out = args.out or Path(tempfile.mkdtemp(prefix="syncmon-lipstill-"))
    out.mkdir(parents=True, exist_ok=True)
    judged_from: list[float] = []
    judged: dict[float, tuple[bool, bool]] = {}  # a frame's time: (still, speaking)
    real_still = lipstill.StillAccount.judge

    def spy(
        self: lipstill.StillAccount,
        tk: np.ndarray,
        still: np.ndarray,
        edge: np.ndarray,
        speaking: np.ndarray,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        before = self.judged_until
        real_still(self, tk, still, edge, speaking, *args, **kwargs)
        if self.judged_until > before and not judged_from:
            judged_from.append(float(tk[tk > before][0]))
        for i in np.nonzero((tk > before) & (tk <= self.judged_until))[0]:
            judged[float(tk[i])] = (bool(still[i]), bool(speaking[i]))

    lipstill.StillAccount.judge = spy  # type: ignore[method-assign]
    if trace is not None:
        spy_trace(trace)
    print(
        "clip          picture              freezes (start:dur s)   truth s  counted s  "
        "episodes  judged from s"
    )
    errors = []
    frames = {"inside": 0, "moving": 0, "moving_edge": 0, "outside": 0, "still": 0}
    frames["still_edge"] = 0
    for case in cases:
        seed, spans = case.seed, case.spans
        judged_from.clear()
        judged.clear()
        av = ReferenceAvatar(
            width=case.size[0],
            height=case.size[1],
            fps=case.fps,
            impairments=Impairments(
                seed=seed, lip_still=spans, exposure_step_s=7.0, offset_ms=case.offset_ms
            ),
            speech=speech(seed),
            articulation=case.articulation,
            renderer=case.renderer,
        )
        path = out / f"{case.name}{case.ext}"
        if not path.exists():
            # written under another name and renamed once whole: a run stopped mid-render
            # leaves no cut clip for the next run to reuse (as bench_content)
            tmp = path.with_name("tmp-" + path.name)
            render(av, tmp, RenderOptions(duration_s=args.seconds, video_bitrate=case.bitrate))
            tmp.rename(path)
        rep = analyze_file(path)
        inside = tuple((s, min(d, args.seconds - s)) for s, d in spans)
        # an episode is a run of more than still_min_s of speech: a freeze the voice speaks
        # through for less counts nothing, by the counter's definition
        least = lipsync.LipSyncConfig().still_min_s
        truth = sum(
            s for s in (speaking_seconds(speech(seed), (span,)) for span in inside) if s > least
        )
        ls = rep["lip_still"]
        frz = " ".join(f"{s:g}:{d:g}" for s, d in inside) or "-"
        jf = f"{judged_from[0]:.1f}" if judged_from else "never"
        picture = (
            f"{case.size[1]}p{case.fps:g} {case.ext[1:]} {case.bitrate // 1000}k"
            if args.random
            else "360p25 mp4 350k"
        )
        if spans:
            errors.append(ls["seconds"] - truth)
        for t, (still, speaking) in judged.items():
            if not speaking:
                continue
            edge = min((min(abs(t - a), abs(t - a - d)) for a, d in spans), default=np.inf)
            if any(a <= t < a + d for a, d in spans):
                frames["inside"] += 1
                frames["moving"] += not still
                frames["moving_edge"] += not still and edge <= 0.2
            else:
                frames["outside"] += 1
                frames["still"] += still
                frames["still_edge"] += still and edge <= 0.2
        print(
            f"{case.name:13s} {picture:20s} {frz:22s} {truth:8.2f} {ls['seconds']:9.2f} "
            f"{ls['episodes']:9d}  {jf:>12s}"
        )
    if errors:
        # (to the counter's own resolution: 4.76 counted for 5.06 is within 0.3 s)
        e = np.round(np.abs(np.asarray(errors)), 6)
        print(
            f"frozen clips within 0.3 s of the truth: {int(np.sum(e <= 0.3))} of {e.size}; "
            f"error (counted - truth) {min(errors):+.2f}..{max(errors):+.2f} s, "
            f"|error| median {np.median(e):.2f} s, mean {np.mean(e):.2f} s"
        )
    if args.frames:
        f = frames
        print(
            f"speaking frames: inside a freeze {f['inside']}, read as moving {f['moving']} "
            f"({f['moving_edge']} within 0.2 s of its edge); outside {f['outside']}, read as "
            f"still {f['still']} ({f['still_edge']} within 0.2 s of a freeze's edge)"
        )


if __name__ == "__main__":
    main()
