"""The reference avatar: speech, a face that follows it, and impairments read back as truth.

One schedule serves the three ways the avatar runs (a file, a live publisher, an avatar
worker): ``frames()`` yields each video frame with the presentation time it should have on the
audio clock, and ``audio(start, n)`` gives the matching audio. Everything is deterministic for a
given seed, and ``truth()`` says what a perfect monitor must measure.

Schedule of frame slot ``k`` (nominal time ``k * T``):

* the mouth shows speech instant ``k*T - offset`` (offset > 0: the picture is late);
* presentation time ``k*T*(1 + ppm*1e-6) + e_k``: clock drift stretches the video clock, and
  ``e_k`` is uniform in ``±1.5 * jitter`` (then the RFC 3550 jitter of the stream is ``jitter``:
  for ``e`` uniform in ``±a``, ``E|e_j - e_i| = 2a/3``);
* a freeze of ``D`` starting at ``s`` skips the ``round(D/T) - 1`` slots after ``round(s/T)``
  without advancing ``frame_id`` (the generator stalled), so the picture stands for ``D``;
* a drop skips one slot and advances ``frame_id`` (the frame was lost); drops are isolated and
  kept away from freezes so that every one is countable without ``frame_id`` too;
* a duplicate repeats the previous slot's picture in its own slot;
* an audio gap zeroes the audio in ``[s, s + D)``;
* a lip-still span ``[s, s + D)`` holds the mouth shut while the speech (and the head) go on:
  the frozen-mouth failure of avatar runtimes.

With an ``ArticulationConfig`` the face follows its speech as talking-head models do (a viseme
mouth with its own phase, prosodic head motion with a lead; ``articulation.py``); ``face_speech``
drives the face from another utterance than the audio (a mismatched-content null), and
``renderer="photo"`` (or ``"hopper"``: another portrait, see ``photo.PORTRAITS``) animates a
photographic portrait instead of the cartoon face.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from .articulation import ArticulationConfig, Articulator
from .face import FaceRenderer, YuvFrame
from .photo import PORTRAITS, PhotoRenderer
from .speech import SpeechSource

WARMUP_SLOTS = 40  # no impairment before the monitor knows the frame rate


@dataclass(frozen=True)
class Impairments:
    """What to inject. Times and durations in seconds unless the name says ms."""

    offset_ms: float = 0.0
    # (at s, ms): from ``at`` on, the picture's offset is ``ms`` more (a sender whose audio
    # fell behind its video on a starved host: the offset steps, not drifts)
    offset_steps: tuple[tuple[float, float], ...] = ()
    jitter_ms: float = 0.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    freezes: tuple[tuple[float, float], ...] = ()
    audio_gaps: tuple[tuple[float, float], ...] = ()
    # audio the publisher never sends (a stalled pipeline: the receiver conceals it); live only
    audio_stalls: tuple[tuple[float, float], ...] = ()
    clock_drift_ppm: float = 0.0
    processing_delay_ms: float = 0.0
    lip_still: tuple[tuple[float, float], ...] = ()
    # auto-exposure: a step of the picture's gain (±4-10 %) every this many seconds on average
    exposure_step_s: float = 0.0
    seed: int = 0

    def validate(self, fps: float) -> None:
        period_ms = 1000.0 / fps
        if self.jitter_ms < 0 or 3.0 * self.jitter_ms >= period_ms:
            raise ValueError(
                f"jitter_ms must be in [0, {period_ms / 3:.1f}) at {fps:g} fps "
                f"(frames would reorder), got {self.jitter_ms}"
            )
        for name, rate in (("drop_rate", self.drop_rate), ("duplicate_rate", self.duplicate_rate)):
            if not 0.0 <= rate <= 0.3:
                raise ValueError(f"{name} must be in [0, 0.3], got {rate}")
        if abs(self.offset_ms) > 2000:
            raise ValueError(f"offset_ms must be within ±2000, got {self.offset_ms}")
        for at, ms in self.offset_steps:
            if at < 0 or abs(self.offset_ms + ms) > 2000:
                raise ValueError(
                    f"offset step ({at}, {ms}) must come at >= 0 s and keep the offset "
                    "within ±2000 ms"
                )
        for s, d in self.freezes:
            if s < 0 or d * fps < 2:
                raise ValueError(f"freeze ({s}, {d}) must start at >= 0 and last >= 2 frames")
        if self.processing_delay_ms < 0:
            raise ValueError(f"processing_delay_ms must be >= 0, got {self.processing_delay_ms}")
        for s, d in self.audio_stalls:
            if s < 0 or not 0.0 < d <= 2.0:
                raise ValueError(f"audio stall ({s}, {d}) must start at >= 0 and last (0, 2] s")
        for s, d in self.lip_still:
            if s < 0 or d <= 0:
                raise ValueError(f"lip_still ({s}, {d}) must start at >= 0 and last > 0")
        if self.exposure_step_s < 0:
            raise ValueError(f"exposure_step_s must be >= 0, got {self.exposure_step_s}")


@dataclass(frozen=True)
class VideoOut:
    """One frame as the avatar emits it."""

    slot: int
    frame_id: int
    pts: float  # seconds on the audio clock
    speech_t: float  # the speech instant the mouth shows
    duplicate: bool
    frame: YuvFrame


@dataclass(frozen=True)
class Truth:
    """What a perfect monitor measures over ``duration`` seconds."""

    offset_ms: float
    drift_ms_per_min: float
    jitter_ms: float
    frames: int
    dropped: int
    duplicated: int
    freezes: int
    freeze_seconds: float
    audio_gap_seconds: float
    audio_gaps: int
    dropped_slots: tuple[int, ...] = field(default=())
    lip_still_seconds: float = 0.0


class ReferenceAvatar:
    """Speech, face and impairment schedule for ``width`` x ``height`` at ``fps``."""

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 360,
        fps: float = 25.0,
        impairments: Impairments | None = None,
        speech: SpeechSource | None = None,
        articulation: ArticulationConfig | None = None,
        face_speech: SpeechSource | None = None,
        renderer: str = "synthetic",
    ) -> None:
        self.imp = impairments or Impairments()
        self.imp.validate(fps)
        self.fps = fps
        self.period = 1.0 / fps
        self.speech = speech or SpeechSource(seed=self.imp.seed + 1)
        self.sample_rate = self.speech.sample_rate
        self.articulation = articulation
        self._face_speech = face_speech
        self.renderer = renderer
        self.face: FaceRenderer | PhotoRenderer
        if renderer in PORTRAITS:
            self.face = PhotoRenderer(
                width=width, height=height, seed=self.imp.seed + 7, portrait=renderer
            )
        elif renderer == "synthetic":
            motion = 0.0 if articulation is None else articulation.head_px
            self.face = FaceRenderer(
                width=width, height=height, seed=self.imp.seed + 7, motion_px=motion
            )
        else:
            raise ValueError(
                f"renderer must be 'synthetic' or one of {sorted(PORTRAITS)}, got {renderer!r}"
            )
        self._articulator: Articulator | None = None
        if articulation is not None:
            self._articulator = Articulator(face_speech or self.speech, articulation)
        elif face_speech is not None:
            raise ValueError("face_speech needs an articulation (the face follows that speech)")
        self._gains = self._exposure_steps()
        self._rng = np.random.default_rng(self.imp.seed + 1000)
        self._skip_freeze: set[int] = set()
        for s, d in self.imp.freezes:
            k0, n = int(round(s / self.period)), int(round(d / self.period))
            self._skip_freeze.update(range(k0 + 1, k0 + n))
        self._freeze_slots = {
            (int(round(s / self.period)), int(round(d / self.period))) for s, d in self.imp.freezes
        }

    # -- schedule ---------------------------------------------------------------------------
    def _near_freeze(self, k: int) -> bool:
        return any(k0 - 2 <= k <= k0 + n + 2 for k0, n in self._freeze_slots)

    def _slots(self) -> Iterator[tuple[int, int, str]]:
        """(slot, frame_id, action) for every slot: action in emit / drop / freeze / dup."""
        frame_id = 0
        prev = "emit"
        k = 0
        while True:
            if k in self._skip_freeze:
                action = "freeze"
            else:
                u = self._rng.random()
                v = self._rng.random()
                eligible = k >= WARMUP_SLOTS and prev == "emit" and not self._near_freeze(k)
                if eligible and u < self.imp.drop_rate:
                    action = "drop"
                elif eligible and v < self.imp.duplicate_rate:
                    action = "dup"
                else:
                    action = "emit"
            yield k, frame_id, action
            if action != "freeze":
                frame_id += 1
            prev = action
            k += 1

    def _timed(self, duration_s: float | None) -> Iterator[tuple[int, int, str, float, float]]:
        """(slot, frame_id, action, pts, speech_t) for every slot up to ``duration_s``."""
        a = 1.5 * self.imp.jitter_ms / 1000.0
        jrng = np.random.default_rng(self.imp.seed + 2000)
        stretch = 1.0 + self.imp.clock_drift_ppm * 1e-6
        for k, frame_id, action in self._slots():
            nominal = k * self.period
            if duration_s is not None and nominal >= duration_s:
                return
            e = float(jrng.uniform(-a, a)) if a > 0 else 0.0
            offset = self.offset_ms_at(nominal) / 1000.0
            yield k, frame_id, action, max(0.0, nominal * stretch + e), nominal - offset

    def offset_ms_at(self, t: float) -> float:
        """The picture's offset (ms) at scene time ``t``: ``offset_ms`` and the steps before."""
        return self.imp.offset_ms + sum(ms for at, ms in self.imp.offset_steps if at <= t)

    def _exposure_steps(self) -> list[tuple[float, float]]:
        """(time, gain) of each auto-exposure step, for an hour of scene time."""
        if self.imp.exposure_step_s <= 0:
            return []
        rng = np.random.default_rng(self.imp.seed + 3000)
        out: list[tuple[float, float]] = []
        t, gain = 0.0, 1.0
        while t < 3600.0:
            t += float(rng.exponential(self.imp.exposure_step_s))
            step = float(rng.uniform(0.04, 0.10)) * (1 if rng.random() < 0.5 else -1)
            gain = float(np.clip(gain * (1 + step), 0.8, 1.2))
            out.append((t, gain))
        return out

    def gain(self, scene_t: float) -> float:
        g = 1.0
        for t, v in self._gains:
            if t > scene_t:
                break
            g = v
        return g

    def lip_still(self, speech_t: float) -> bool:
        return any(s <= speech_t < s + d for s, d in self.imp.lip_still)

    def mouth_moves(self, speech_t: float) -> bool:
        """Whether the frame that shows ``speech_t`` shows the mouth moving with the speech:
        the voice speaks there (its 10 ms RMS above -40 dBFS, as in ``speaking_seconds``) and
        the mouth is not held still. The truth of the first moving picture (start-up)."""
        if speech_t < 0 or self.lip_still(speech_t):
            return False
        sr = self.speech.sample_rate
        n = sr // 100
        x = self.speech.samples(max(0, int(round(speech_t * sr)) - n // 2), n)
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) > 0.01

    def _render(self, k: int, speech_t: float) -> YuvFrame:
        scene_t = k * self.period
        pose = None
        if self._articulator is not None:
            pose = self._articulator.pose(speech_t)
            opening = pose.mouth_open
        else:
            opening = self.speech.mouth_open(speech_t)
        if self.lip_still(speech_t):
            # the whole mouth stops (an avatar runtime that stopped animating): its width
            # too, which a viseme mouth otherwise spreads and rounds with the speech
            opening = 0.0
            if pose is not None:
                pose = replace(pose, mouth_open=0.0, mouth_width=1.0)
        return self.face.render(
            mouth_open=opening, scene_t=scene_t, slot=k, pose=pose, gain=self.gain(scene_t)
        )

    def frames(self, duration_s: float | None = None) -> Iterator[VideoOut]:
        """Every emitted frame, in order, up to ``duration_s`` of nominal time."""
        last: YuvFrame | None = None
        for k, frame_id, action, pts, speech_t in self._timed(duration_s):
            if action in ("drop", "freeze"):
                continue
            if action == "dup" and last is not None:
                frame = last
            else:
                frame = self._render(k, speech_t)
            last = frame
            yield VideoOut(k, frame_id, pts, speech_t, action == "dup", frame)

    def audio(self, start: int, n: int) -> np.ndarray:
        """Mono float audio samples ``[start, start + n)`` with the injected gaps."""
        x = self.speech.samples(start, n)
        sr = self.sample_rate
        for s, d in self.imp.audio_gaps:
            g0, g1 = int(round(s * sr)) - start, int(round((s + d) * sr)) - start
            if g1 > 0 and g0 < n:
                x[max(g0, 0) : min(g1, n)] = 0.0
        return x

    def truth(self, duration_s: float) -> Truth:
        """Ground truth for the first ``duration_s`` seconds (re-runs the schedule)."""
        twin = ReferenceAvatar(fps=self.fps, impairments=self.imp, speech=self.speech)
        dropped: list[int] = []
        frames = dups = freezes = 0
        freeze_s = 0.0
        last_pts: float | None = None
        in_freeze = False
        for k, _fid, action, pts, _st in twin._timed(duration_s):
            if action == "drop":
                dropped.append(k)
            elif action == "freeze":
                in_freeze = True
            else:
                frames += 1
                dups += action == "dup"
                if in_freeze and last_pts is not None:
                    freezes += 1
                    freeze_s += pts - last_pts
                in_freeze = False
                last_pts = pts
        gaps = [d for s, d in self.imp.audio_gaps if s + d < duration_s]
        return Truth(
            offset_ms=self.offset_ms_at(duration_s),
            drift_ms_per_min=self.imp.clock_drift_ppm * 0.06,
            jitter_ms=self.imp.jitter_ms,
            frames=frames,
            dropped=len(dropped),
            duplicated=dups,
            freezes=freezes,
            freeze_seconds=freeze_s,
            audio_gap_seconds=float(sum(gaps)),
            audio_gaps=len(gaps),
            lip_still_seconds=float(
                sum(max(0.0, min(d, duration_s - s)) for s, d in self.imp.lip_still)
            ),
            dropped_slots=tuple(dropped),
        )


def speaking_seconds(speech: SpeechSource, spans: tuple[tuple[float, float], ...]) -> float:
    """Seconds inside ``spans`` during which ``speech`` speaks: 10 ms blocks above -40 dBFS,
    widened by 60 ms either side (the closure of a stop is still speech). The truth of the
    lip-still counter for a fresh source (it reads the samples from 0)."""
    sr = speech.sample_rate
    end = max((s + d for s, d in spans), default=0.0)
    x = speech.samples(0, int(end * sr))
    hop = sr // 100
    rms = np.sqrt(np.mean(x[: x.size // hop * hop].reshape(-1, hop) ** 2, axis=1))
    active = np.convolve((rms > 0.01).astype(float), np.ones(13), "same") > 0
    t = (np.arange(active.size) + 0.5) / 100
    inside = np.zeros(active.size, bool)
    for s0, d in spans:
        inside |= (t >= s0) & (t < s0 + d)
    return float(np.sum(active & inside) / 100)


def loud_positions(
    speech: SpeechSource, *, every_s: float, gap_s: float, until_s: float
) -> tuple[tuple[float, float], ...]:
    """Audio gap positions about ``every_s`` apart where speech is loud on both edges."""
    sr = speech.sample_rate
    edge = int(0.005 * sr)
    out: list[tuple[float, float]] = []
    t = every_s
    while t + gap_s < until_s:
        p = t
        while p + gap_s < min(until_s, t + every_s):
            i0, i1 = int(p * sr), int((p + gap_s) * sr)
            before = speech.samples(i0 - edge, edge)
            after = speech.samples(i1, edge)
            if min(np.sqrt(np.mean(before**2)), np.sqrt(np.mean(after**2))) > 0.05:
                out.append((round(p, 4), gap_s))
                break
            p += 0.01
        t += every_s
    return tuple(out)
