"""Where the avatar's face is, and whether its mouth moves while the voice speaks.

The content estimator finds the mouth by what follows the voice (``lipsync``). A mouth frozen
from the start never does, so it is never found there, and a stream whose avatar stopped
animating before the monitor saw it move would count no lip-still second. The face is found
instead by a detector that needs no motion: OpenCV's Haar frontal-face cascade, whose model
ships inside ``opencv-python-headless`` 4.x (5.x no longer carries it), run on a 320-px-wide
copy of the frame every 1-8 s while searching (~8-35 ms each here), and once a face is found
every 10 s around its box only, scaled so the face is 64 px wide (2-5 ms; again after 1 s
when it is missed there; the box is dropped after three misses in a row and the whole frame
searched again). Between detections the box stays where it is: the head moves inside it.

The head's own motion is taken out by registering the face rather than by modelling it: each
frame's grown face box (a little larger, to take in the chin) is cut to a ``REG_SIZE`` square
and aligned to the box's first frame by a rotation and shift found on the upper face alone
(eyes, nose, forehead; blind to the light's gain and offset, each frame starting from the
last frame's alignment: ``_Registration``, 0.04-0.10 ms on the upper 35 rows of a 64x64
square). An avatar
model warps the head as a whole about the neck, so after this the mouth's cells change only
when the mouth (or the light) does.
The registered square is reduced to the mean luma of a ``FACE_GRID`` square, and its lighting
undone: the upper face's gain and offset against the first frame's. (Before registration the
head was taken out as the leading time courses of the upper face's cells -- to first order its
luma gradient times the displacement -- which left a photographic mouth held shut on a
nodding head at 360p moving 20-100 % of a speaking one, and two of three such freezes on the
lip-still bench uncounted.)

Over an estimator window (``mouth_motion``) the cells are high-passed (the estimator's own
high-pass), what the upper face still shares (``HEAD_RANK`` time course: what the lighting fit
leaves) is taken out of the mouth's cells, and each cell's mean square is taken over
``MOTION_SPAN_S``. The mouth is the zone's ``MOUTH_ACTIVE`` cells that move most over the
window; its motion at a frame is the mean square of the ``TOP_CELLS`` of them that move most
there (the lips, the cavity and the jaw take turns). Measured on the lip-still bench's clips
(photographic and cartoon faces, 2-6 px nods with 0.5-3 degree roll, exposure steps, 15-30 fps,
360p-720p, H.264 and VP8 at 150-1200 kbps), in luma levels squared: speaking frames of moving
mouths 40-150 on the photograph and 250-330 on the cartoon at their 5th percentile; frozen
mouths at a median of 0.2-2 on the photograph and 2-3.5 on the cartoon, 95th percentile 2-7
away from a freeze's edges (which the span blurs). ``MOVING_LEVEL`` lies between. The hopper
portrait, added later (a textured face: wrinkles, glasses), showed what registration leaves of
the head at the chin (the jaw and neck do not turn with the skull): a frozen mouth on a
nodding head read a median of 8 and up to 65, and a mouth frozen from the start was counted
for a quarter of its speaking seconds. That residual follows the head's pose, which the
registration measures on the upper face, blind to the mouth: the mouth's cells are cleaned
of it (``POSE_FIT_SHARE``), and the same mouth counts 14.60 of its 14.57 s. (Where the head
swings fast, a second of a frozen hopper mouth mid-speech still reads 30-60: not linear in
the pose, nor quadratic, tried.)

Over a window the mouth's change from frame to frame is measured too (``mouth_change``: the
same cells, cleaned the same way, on frame differences): it reads the picture's noise between
frozen frames, where the motion's high-pass and span carry the movement before and after a
freeze 0.15-0.25 s into it, and places an episode's edges (``lipsync``).

The same registered mouth also judges the content estimator's lag (``lipsync``'s
``_face_judge``): on a busy face the picture's own cells follow the head nearly as well as the
mouth, the registered mouth's cells far better.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from .filters import uniform_filter_nearest

log = logging.getLogger(__name__)

FACE_GRID = 16
DETECT_WIDTH = 320
MIN_FACE_PX = 20  # at DETECT_WIDTH: a face 40 px wide at 640
SEARCH_EVERY_S = 1.0  # while no face is known; doubling after each miss, up to SEARCH_MAX_S
SEARCH_MAX_S = 8.0
TRACK_EVERY_S = 10.0
LOST_AFTER = 3  # detections in a row that find no face before the box is dropped
# a known face is looked for within this share of its size around it, scaled to be this
# wide, at sizes within this factor
NEAR_MARGIN = 0.6
NEAR_FACE_PX = 64
NEAR_SCALE = 1.6
MOVED_IOU = 0.6  # a detection overlapping the box less than this (twice in a row) moves it
# the face box grown to take in the chin and jaw: (left, top, right, bottom) in box widths
GROW = (0.1, 0.05, 0.1, 0.15)
REG_SIZE = 64  # the square the face is registered in: a face of 90-300 px, cells of 4x4
UPPER_ROWS = 0.55  # of the grown box: the rows registration aligns (eyes, nose, forehead)
# a registration that turns the face by more than this, or shifts it by more than this share
# of the box, lost it (a cut, another face): it starts again from the unmoved box
REG_MAX_RAD = 0.35
REG_MAX_SHIFT = 0.25
_REG_ITERATIONS = 6  # from the last frame's alignment 1-3 are usual
_REG_TOL_PX = 0.02
# the registered upper face's correlation with the first frame's below which the face is lost
REG_MIN_CORR = 0.5
_UPPER_PX = int(UPPER_ROWS * REG_SIZE)
# the registration's warp before an alignment, and after one that lost the face (never
# changed in place: a warp that is it has not moved)
_UNMOVED = np.eye(3)

_rows = np.arange(FACE_GRID * FACE_GRID) // FACE_GRID
_cols = np.arange(FACE_GRID * FACE_GRID) % FACE_GRID
G = FACE_GRID
# in the grown box the mouth lies at ~0.7-0.85 of the height; the zone is generous (its three
# most active cells are used, and cells that do not move add nothing)
MOUTH_CELLS = np.nonzero(
    (_rows >= int(0.62 * G))
    & (_rows <= int(0.92 * G))
    & (_cols >= int(0.28 * G))
    & (_cols <= int(0.72 * G))
)[0]
UPPER_CELLS = np.nonzero(_rows <= int(0.55 * G))[0]
# the face away from the mouth's zone (a cell's margin around it, nothing below it: the chin
# and the collar move with the jaw)
AWAY_CELLS = np.nonzero(
    (_rows < int(0.62 * G) - 1) | (_cols < int(0.28 * G) - 1) | (_cols > int(0.72 * G) + 1)
)[0]
# after registration what the whole face still shares is its lighting: one time course of the
# upper face (the ten strongest, before registration, carried the mouth's own motion away with
# the head's). More, from the whole face away from the mouth, took more of what registration
# leaves of a textured, nodding head (the hopper portrait's frozen mouth: a maximum of 65 luma
# levels squared with this one, 5.9 with five) but leaked into the frames of a window where
# the mouth froze mid-speech (a time course is cleaned over the whole window, and the cheeks
# beside a moving mouth move with it): the lip-still bench's seed 6 went from 14 to 10 of 14
# freezes within 0.3 s, and no rank or cell set tried kept both.
HEAD_RANK = 1
# the registered mouth as a judge of the content lag (lipsync's _face_judge): there the whole
# window's correlation is what counts, and five time courses of the face away from the mouth
# took a frozen mouth's following of the head on the hopper portrait from 0.6-0.7 to 0.1-0.3
JUDGE_RANK = 5
# what registration leaves of the head at the chin follows the head's pose: the mouth's cells
# are fitted to the registration's own pose (turn, shift: 3 time courses of the upper face's
# alignment, blind to the mouth) over the quietest POSE_FIT_SHARE of the window's frames and
# cleaned of the fit. Fitted on all frames the fit took in the mouth's own motion where the
# head nods with the speech and put it back into a mouth frozen mid-speech (the lip-still
# bench's seed 6: a cartoon freeze of 2.85 s counted 0); on the quiet frames it is the head's.
# The hopper portrait's mouth frozen from the start: 3.88 -> 14.60 of 14.57 s counted.
POSE_FIT_SHARE = 0.7
# Quiet frames are not always the head's: a mouth that speaks softly for a second, on a head
# nodding with the same speech, is among them, and its own motion follows the pose too; fitted
# in, the fit took half of it away (luma levels squared 15-30 instead of 30-70: a false
# lip-still episode on the lip-still bench's seed 13, astronaut 720p15) and put the pose's
# motion into a mouth frozen there (1-9 instead of 0.2-0.5). So the fit is checked where every
# mouth is still, moving or frozen: the voice's pauses (``still`` frames, lipsync). Where the
# head leaks into the mouth's cells, cleaning takes motion out of them there as everywhere;
# where the fit holds the mouth's own motion instead, it adds the pose's motion there, and the
# cells are left as they are. Too few pause frames (under POSE_CHECK_MIN): the fit is kept.
POSE_CHECK_MIN = 15
MOUTH_ACTIVE = 8  # the mouth zone's cells that move most over a window
TOP_CELLS = 3  # of those, the ones that move most at each frame
MOTION_SPAN_S = 0.28
MOVING_LEVEL = 10.0  # luma levels squared: see the module's docstring
# a frame whose upper face is this much darker than the first's (or inverted) is not
# normalised: the face left or the picture went dark
MIN_GAIN = 0.2


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


_loaded = threading.local()  # a cascade per thread: OpenCV does not promise it is thread-safe


def _load_cascade() -> Any:
    """This thread's frontal-face cascade (reading its model costs ~60-100 ms, once), or None
    (logged) when OpenCV or its model is missing."""
    if hasattr(_loaded, "cascade"):
        return _loaded.cascade
    _loaded.cascade = _read_cascade()
    return _loaded.cascade


def _read_cascade() -> Any:
    try:
        import cv2

        # cv2.data is a package module the stubs do not list
        data: Any = getattr(cv2, "data")  # noqa: B009
        path = data.haarcascades + "haarcascade_frontalface_default.xml"
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise OSError(f"no face model at {path}")
        # one thread: the monitor's analysis runs beside the SDK's own threads, and an idle
        # OpenCV pool would spin as OpenBLAS's does
        cv2.setNumThreads(1)
        return cascade
    except (ImportError, OSError, AttributeError) as e:
        log.warning(
            "face detection unavailable (%s): a mouth frozen from the start is not counted", e
        )
        return None


class FaceFrame(NamedTuple):
    """One frame's face: ``segment`` changes whenever the box does (grids of different boxes
    are not comparable); ``grid``: FACE_GRID x FACE_GRID mean luma over the grown box,
    registered; ``pose``: the registration's turn (radians, times REG_SIZE: pixels at the
    square's edge) and shift (pixels of the REG_SIZE square)."""

    segment: int
    grid: np.ndarray
    pose: np.ndarray


class FaceTrack:
    """The face box over a stream and each frame's face (``FaceFrame``; None while no face
    is known)."""

    def __init__(self, background: bool = False) -> None:
        self.box: np.ndarray | None = None  # x, y, w, h in frame pixels
        self.segment = 0
        self._candidate: np.ndarray | None = None
        self._next_t = -np.inf
        self._misses = 0
        self.detections = 0
        self.errors = 0
        self.frames = 0  # frames the face was shown in (its grid returned)
        self._off = False  # OpenCV or its model missing (logged once)
        # live: detections run on a thread of their own (OpenCV releases the GIL), so that the
        # 15-35 ms of one (and the cascade's first reading, ~100 ms) never delay the event loop
        # that stamps the audio's arrival; a recording detects in line (deterministic)
        self._background = background
        self._pending: Future[Found | None] | None = None
        self._reg: _Registration | None = None

    @property
    def available(self) -> bool:
        if not self._off and not self._background and _load_cascade() is None:
            self._off = True
        return not self._off

    def update(self, t: float, luma: np.ndarray) -> FaceFrame | None:
        if self._pending is not None and self._pending.done():
            pending, self._pending = self._pending, None
            try:
                self._apply(pending.result(), t)
            except Exception as e:  # a detection that failed is a miss, logged and counted
                self.errors += 1
                log.warning("face detection failed (%s; %d so far)", e, self.errors)
                self._apply((np.zeros((0, 4)), np.zeros(0)), t)
        if t >= self._next_t and self._pending is None and self.available:
            # with a face known, only around it (a tenth of the cost; a face that left the
            # region is missed, and after LOST_AFTER misses looked for on the whole frame)
            near = None if self.box is None else self.box.copy()
            if self._background:
                self._pending = _executor().submit(_find, np.array(luma), near)
                self._next_t = np.inf  # scheduled once it is applied
            else:
                self._apply(_find(luma, near), t)
        if self.box is None:
            return None
        if self._reg is None or self._reg.segment != self.segment:
            self._reg = _Registration(self.segment)
        grid = self._reg.grid(face_crop(luma, self.box))
        self.frames += 1
        return FaceFrame(self.segment, grid, self._reg.pose())

    def _apply(self, found: Found | None, t: float) -> None:
        if found is None:  # no cascade on the detecting thread
            self._off = True
            return
        self._detected(found)
        if self.box is not None and self._misses == 0:
            self._next_t = t + TRACK_EVERY_S
        elif self.box is not None:  # it missed the face it had: look again soon
            self._next_t = t + SEARCH_EVERY_S
        else:
            self._next_t = t + min(SEARCH_MAX_S, SEARCH_EVERY_S * 2.0 ** min(self._misses, 8))

    def _detected(self, found_boxes: Found) -> None:
        boxes, weights = found_boxes
        self.detections += 1
        if len(boxes) == 0:
            self._misses += 1
            if self.box is not None and self._misses >= LOST_AFTER:
                self.box, self._candidate = None, None
                self.segment += 1
            return
        self._misses = 0
        # the most certain face (a talking avatar shows one; the cascade's weaker hits are
        # textures that look like one)
        found = np.asarray(boxes[int(np.argmax(np.ravel(weights)))], dtype=np.float64)
        if self.box is None:
            self.box, self.segment = found, self.segment + 1
        elif _iou(found, self.box) < MOVED_IOU:
            if self._candidate is not None and _iou(found, self._candidate) >= MOVED_IOU:
                self.box, self.segment = found, self.segment + 1
                self._candidate = None
            else:
                self._candidate = found
        else:
            self._candidate = None


Found = tuple[np.ndarray, np.ndarray]  # boxes (x, y, w, h in frame pixels), their weights

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncmon-face")
        return _pool


def _find(luma: np.ndarray, near: np.ndarray | None = None) -> Found | None:
    """The cascade's faces in ``luma``; None without a cascade. Searched on a DETECT_WIDTH copy
    of the frame, or, ``near`` a known face box, only around it, with the face at ~NEAR_FACE_PX
    and sizes within NEAR_SCALE of it."""
    import cv2

    cascade = _load_cascade()
    if cascade is None:
        return None
    h, w = luma.shape
    x0 = y0 = 0
    min_px, max_px = MIN_FACE_PX, 0  # (0: no upper bound)
    if near is not None:
        bx, by, bw, bh = (float(v) for v in near)
        x0, y0 = int(max(0.0, bx - NEAR_MARGIN * bw)), int(max(0.0, by - NEAR_MARGIN * bh))
        x1 = int(min(w, bx + (1 + NEAR_MARGIN) * bw))
        y1 = int(min(h, by + (1 + NEAR_MARGIN) * bh))
        luma = luma[y0:y1, x0:x1]
        scale = min(1.0, NEAR_FACE_PX / max(bw, 1.0))
        min_px = max(MIN_FACE_PX, int(NEAR_FACE_PX / NEAR_SCALE))
        max_px = int(NEAR_FACE_PX * NEAR_SCALE) + 1
    else:
        scale = DETECT_WIDTH / w if w > DETECT_WIDTH else 1.0
    ph, pw = luma.shape
    small = (
        cv2.resize(
            luma,
            (max(1, round(pw * scale)), max(1, round(ph * scale))),
            interpolation=cv2.INTER_AREA,
        )
        if scale < 1.0
        else np.ascontiguousarray(luma)
    )
    boxes, _, weights = cascade.detectMultiScale3(
        small,
        1.1,
        3,
        minSize=(min_px, min_px),
        maxSize=(max_px, max_px),
        outputRejectLevels=True,
    )
    found = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale
    found[:, :2] += (x0, y0)
    return found, np.ravel(np.asarray(weights))


def face_crop(luma: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The grown face ``box`` of ``luma`` as a REG_SIZE square (float32 luma)."""
    import cv2

    x, y, w, h = (float(v) for v in box)
    x0 = int(max(0, x - GROW[0] * w))
    y0 = int(max(0, y - GROW[1] * h))
    x1 = int(min(luma.shape[1], x + (1 + GROW[2]) * w))
    y1 = int(min(luma.shape[0], y + (1 + GROW[3]) * h))
    # every step-th pixel: the square still averages a few pixels each, and a cartoon's
    # 600-px face costs what a photo's 150-px one does
    step = max(1, (x1 - x0) // (2 * REG_SIZE))
    patch = luma[y0:y1:step, x0:x1:step]
    h, w = patch.shape
    if h < G or w < G:
        return np.zeros((REG_SIZE, REG_SIZE), np.float32)
    # OpenCV's area resize by an integer factor is a block mean (4 us here for a 163-px
    # square's even part), by any other factor a general path of 60-90 us, the face's
    # largest per-frame cost: each side over twice the square is halved by 2x2 means, and
    # the rest (a factor under 2) interpolated linearly
    fy, fx = (2 if h >= 2 * REG_SIZE else 1), (2 if w >= 2 * REG_SIZE else 1)
    if fx > 1 or fy > 1:
        patch = cv2.resize(
            patch[: h - h % fy, : w - w % fx],
            (w // fx, h // fy),
            interpolation=cv2.INTER_AREA,
        )
    return np.asarray(
        cv2.resize(patch, (REG_SIZE, REG_SIZE), interpolation=cv2.INTER_LINEAR),
        dtype=np.float32,
    )


class _Registration:
    """One face box's frames aligned to its first (see the module's docstring).

    The alignment is a Gauss-Newton search of the rotation and shift that map the first frame's
    upper face onto this frame's (Baker and Matthews' inverse compositional algorithm: the
    gradients and the normal equations are the first frame's, computed once, so an iteration
    is one small warp and one product), with the first frame's mean and gain projected out of
    it, so a change of light does not read as motion (what OpenCV's ECC ignores by normalising
    each iteration). Each frame starts from the last frame's alignment; it ends when a step
    moves the square by under ``_REG_TOL_PX``. ECC took 0.13-0.27 ms a frame here for the same
    residual (within 5 %: the registered face's luma error against the first frame on nodding,
    rolling photographic and cartoon heads); this takes 0.04-0.10 ms."""

    def __init__(self, segment: int) -> None:
        self.segment = segment
        self.resets = 0
        self._template: np.ndarray | None = None  # the first frame's upper face, flat
        self._descent: np.ndarray | None = None  # 3 x pixels: (H^-1 J^T), mean and gain out
        self._centred = np.zeros(0, np.float32)  # the template less its mean, and its norm
        self._norm = 0.0
        self._ref_upper: np.ndarray | None = None  # the first frame's grid, centred
        self._ref_var = 0.0
        self._ref_mean = 0.0
        self._warp = _UNMOVED  # template to frame, homogeneous

    def grid(self, crop: np.ndarray) -> np.ndarray:
        """``crop`` (face_crop) aligned to the box's first frame, as FACE_GRID cell means."""
        import cv2

        smooth = cv2.GaussianBlur(crop, (3, 3), 0)
        if self._template is None:
            self._start(smooth)
        elif self._descent is not None and _varies(smooth[:_UPPER_PX]):
            warp = self._align(smooth)
            if warp is None:  # it lost the face (a cut, another face): from the unmoved box
                self.resets += 1
                self._warp = _UNMOVED
            else:
                self._warp = warp
        grid = _cells(crop, self._warp)
        # the lighting too: the upper face's gain and offset against the first frame's (an
        # exposure step scales every cell by its own luma, which no single time course takes
        # out of a window that also holds blinks)
        upper = grid.ravel()[UPPER_CELLS]
        if self._ref_upper is None:
            self._ref_mean = float(upper.sum()) / upper.size
            self._ref_upper = upper - self._ref_mean
            self._ref_var = float(self._ref_upper @ self._ref_upper)
        elif self._ref_var > 0:
            # least squares of this frame's upper face on the first frame's
            mean = float(upper.sum()) / upper.size
            gain = float(self._ref_upper @ (upper - mean)) / self._ref_var
            if gain > MIN_GAIN:
                offset = mean - gain * self._ref_mean
                grid = (grid - offset) / gain
        return grid.astype(np.float32)

    def pose(self) -> np.ndarray:
        """The last frame's alignment: turn (radians x REG_SIZE), x and y shift (pixels)."""
        m = self._warp
        turn = math.atan2(float(m[1, 0]), float(m[0, 0])) * REG_SIZE
        return np.array([turn, m[0, 2], m[1, 2]], np.float32)

    def _start(self, smooth: np.ndarray) -> None:
        t = smooth[:_UPPER_PX].astype(np.float32)
        self._template = t.ravel()
        centred = self._template - float(np.mean(self._template))
        norm = float(np.linalg.norm(centred))
        if norm == 0:  # a flat face: nothing to align on
            return
        gy, gx = np.gradient(t)
        yy, xx = np.mgrid[0 : t.shape[0], 0 : t.shape[1]].astype(np.float32)
        # the warp's derivative at the identity, per pixel: turn (about the origin), x, y
        jac = np.stack([(gy * xx - gx * yy).ravel(), gx.ravel(), gy.ravel()], axis=1)
        light = np.stack([np.full_like(centred, 1.0 / math.sqrt(centred.size)), centred / norm], 1)
        jac -= light @ (light.T @ jac)
        hess = jac.T @ jac
        if np.linalg.cond(hess) > 1e8:  # no texture to align on (a flat or striped face)
            return
        self._descent = np.ascontiguousarray(np.linalg.solve(hess, jac.T), dtype=np.float32)
        self._centred, self._norm = centred, norm

    def _align(self, smooth: np.ndarray) -> np.ndarray | None:
        """This frame's warp (3x3, template to frame), or None when the face is lost."""

        assert self._descent is not None and self._template is not None
        # the warp's two rows as plain floats: numpy's per-call cost on 2x3 numbers was most of
        # an iteration's (each iteration is one small warp and one product)
        (a, b, e), (d, f, g) = self._warp[:2].tolist()
        template, descent = self._template, self._descent
        for _ in range(_REG_ITERATIONS):
            seen = _aligned(smooth, ((a, b, e), (d, f, g)), _UPPER_PX).ravel()
            th, tx, ty = (descent @ (seen - template)).tolist()
            if not (math.isfinite(th) and math.isfinite(tx) and math.isfinite(ty)):
                return None
            # compose with the step's inverse
            c, s = math.cos(th), math.sin(th)
            ix, iy = -(c * tx + s * ty), s * tx - c * ty
            a, b, e, d, f, g = (
                a * c - b * s,
                a * s + b * c,
                a * ix + b * iy + e,
                d * c - f * s,
                d * s + f * c,
                d * ix + f * iy + g,
            )
            ang = math.atan2(d, a)  # (kept a rotation: no drift into scale)
            a, b, d, f = math.cos(ang), -math.sin(ang), math.sin(ang), math.cos(ang)
            if abs(th) * REG_SIZE + abs(tx) + abs(ty) < _REG_TOL_PX:
                break
        m = np.array(((a, b, e), (d, f, g), (0.0, 0.0, 1.0)))
        if not self._plausible(m):
            return None
        # the aligned upper face must still look like the first frame's: a cut or another
        # face aligns to something, but not to this
        # (from sums: the template's centred copy has zero mean, so it sees the frame's own
        # mean as nothing; no centred copy of the frame is made)
        total = float(seen.sum(dtype=np.float64))
        var = float(seen @ seen) - total * total / seen.size
        if var <= 0 or float(seen @ self._centred) / (math.sqrt(var) * self._norm) < REG_MIN_CORR:
            return None
        return m

    @staticmethod
    def _plausible(warp: np.ndarray) -> bool:
        # (plain floats: on four numbers numpy's overhead per call is most of the cost)
        a, b, tx, ty = float(warp[0, 0]), float(warp[1, 0]), float(warp[0, 2]), float(warp[1, 2])
        return (
            all(math.isfinite(v) for v in (a, b, tx, ty))
            and abs(math.atan2(b, a)) <= REG_MAX_RAD
            and max(abs(tx), abs(ty)) <= REG_MAX_SHIFT * REG_SIZE
        )


def _varies(img: np.ndarray) -> bool:
    import cv2

    lo, hi, _, _ = cv2.minMaxLoc(img)
    return bool(hi > lo)


def _aligned(img: np.ndarray, warp: Any, rows: int, cols: int = REG_SIZE) -> np.ndarray:
    """The first ``rows`` rows and ``cols`` columns of the template seen in ``img`` through
    ``warp`` (its first two rows, template to frame: an array or nested sequences): each
    template pixel sampled where the warp puts it."""
    import cv2

    return np.asarray(
        cv2.warpAffine(
            img,
            np.array(warp, dtype=np.float32),
            (cols, rows),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    )


_CELL = REG_SIZE // G
# a FACE_GRID cell's centre in the REG_SIZE square, from its index (homogeneous)
_CELL_CENTRES = np.array(
    [[_CELL, 0.0, (_CELL - 1) / 2], [0.0, _CELL, (_CELL - 1) / 2], [0.0, 0.0, 1.0]]
)


def _cells(crop: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """The FACE_GRID cell means of ``crop`` (a REG_SIZE square) seen through ``warp`` (3x3,
    template to frame): the crop's means over cell-sized boxes, sampled where the warp puts
    each cell's centre. For a shift this is the warped crop's cell means exactly; for the
    small turns a head makes, within the interpolation's smoothing. (Warping the whole square
    and then taking its cells cost 30 us a frame here, this 15.)"""
    import cv2

    if warp is _UNMOVED:
        return np.asarray(cv2.resize(crop, (G, G), interpolation=cv2.INTER_AREA), np.float64)
    # an even box's anchor is the pixel right of and below its centre
    boxed = cv2.boxFilter(crop, -1, (_CELL, _CELL), borderType=cv2.BORDER_REPLICATE)
    to_box = warp @ _CELL_CENTRES
    to_box[:2, 2] += 0.5
    return np.asarray(_aligned(boxed, to_box[:2], G, G), np.float64)


@functools.lru_cache(maxsize=16)
def random_probe(rows: int, cols: int) -> np.ndarray:
    """The range finders' random start: the same seeded draws for every window of a shape
    (an estimate is reproducible), drawn once (a generator and its draws cost ~0.1 ms, a
    tenth of a range finder's time); read-only, as it is shared."""
    probe = np.random.default_rng(0).standard_normal((rows, cols))
    probe.flags.writeable = False
    return probe


def leading_time_courses(x: np.ndarray, rank: int) -> np.ndarray:
    """Orthonormal frames x rank basis of the strongest time courses of ``x`` (frames x cells):
    a randomized range finder with two power iterations, then Rayleigh-Ritz on the small
    symmetric problem (a full decomposition cost 3-6 ms per window on the face and ten on the
    picture's cells, and LAPACK's divide-and-conquer SVD failed to converge on one ordinary
    window of face grids)."""
    y = x @ random_probe(x.shape[1], rank + 4)
    for _ in range(2):
        y, _ = np.linalg.qr(y)
        y = x @ (x.T @ y)
    q, _ = np.linalg.qr(y)
    b = q.T @ x
    _, vecs = np.linalg.eigh(b @ b.T)
    return np.asarray(q @ vecs[:, ::-1][:, :rank])


def without_pose(
    x: np.ndarray, pose: np.ndarray, span: int, still: np.ndarray | None = None
) -> np.ndarray:
    """``x`` (frames x mouth cells, high-passed) less what follows the registration's ``pose``
    (frames x 3, high-passed alike), fitted on the frames where the mouth's cells move least
    over ``span`` frames (``POSE_FIT_SHARE``: see there); ``x`` as it is when the fit adds to
    the cells' motion on the ``still`` frames (a mask: the voice's pauses, POSE_CHECK_MIN of
    them or more)."""
    quiet = uniform_filter_nearest(np.sum(x * x, axis=1), span)
    fit = quiet <= _quantile(quiet, POSE_FIT_SHARE)
    if np.count_nonzero(fit) <= 4 * pose.shape[1]:
        return x
    coef = np.linalg.lstsq(pose[fit], x[fit], rcond=None)[0]
    cleaned = np.asarray(x - pose @ coef)
    if still is not None and np.count_nonzero(still) >= POSE_CHECK_MIN:
        if np.sum(cleaned[still] ** 2) > np.sum(x[still] ** 2):
            return x
    return cleaned


def _quantile(x: np.ndarray, q: float) -> float:
    """``np.quantile(x, q)`` (its default, linear method, to the bit) of a 1-D ``x``, from a
    partition at the two values it lies between (np.quantile's general path costs ~0.1 ms a
    call, three calls a window)."""
    if not np.isfinite(x).all():  # (numpy's own handling of NaN and infinities)
        return float(np.quantile(x, q))
    v = (x.size - 1) * q
    lo = math.floor(v)
    if lo + 1 >= x.size:
        return float(np.max(x))
    part = np.partition(x, (lo, lo + 1))
    a, b = float(part[lo]), float(part[lo + 1])
    t = v - lo
    # numpy's lerp: from the nearer end
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def _mouth_cells(
    sig_grids: np.ndarray,
    sig_pose: np.ndarray | None,
    span: int,
    still: np.ndarray | None = None,
) -> np.ndarray:
    """The mouth zone's cells of ``sig_grids`` (frames x FACE_GRID**2, high-passed or
    differenced) less what the upper face still shares and what follows the pose
    (``sig_pose``, the same filter; ``still``: see ``without_pose``): what is left is the
    mouth's own."""
    n = sig_grids.shape[0]
    q = leading_time_courses(sig_grids[:, UPPER_CELLS], min(HEAD_RANK, max(1, n // 8)))
    x = sig_grids[:, MOUTH_CELLS]
    x = x - q @ (q.T @ x)
    if sig_pose is not None:
        x = without_pose(x, sig_pose - q @ (q.T @ sig_pose), span, still)
    return np.asarray(x)


def _mouth_level(e: np.ndarray) -> np.ndarray:
    """Per frame, the mean of the TOP_CELLS largest of ``e`` (frames x mouth cells, squares)
    among the MOUTH_ACTIVE cells largest over the window: the mouth is where its zone moves
    most over the window; from moment to moment a different part of it moves most (the lips,
    the cavity, the jaw below them)."""
    e = e[:, np.argsort(np.sum(e, axis=0))[::-1][:MOUTH_ACTIVE]]
    return np.asarray(np.mean(np.sort(e, axis=1)[:, -TOP_CELLS:], axis=1))


def mouth_motion(
    hp_grids: np.ndarray,
    fps: float,
    hp_pose: np.ndarray | None = None,
    still: np.ndarray | None = None,
) -> np.ndarray:
    """Per frame, the mouth's own motion (mean square, luma levels squared; see the module's
    docstring); ``hp_grids`` is frames x FACE_GRID**2 of registered face grids and
    ``hp_pose`` frames x 3 of their poses (``FaceFrame``), both already high-passed;
    ``still``: the frames where any mouth is still (the voice's pauses), if known, which
    check the pose's fit (``without_pose``)."""
    span = max(3, int(round(MOTION_SPAN_S * fps)))
    x = _mouth_cells(hp_grids, hp_pose, span, still)
    # (a running sum can leave a rounding error below zero)
    return _mouth_level(np.maximum(uniform_filter_nearest(x * x, span, axis=0), 0.0))


def mouth_change(
    grids: np.ndarray,
    fps: float,
    pose: np.ndarray | None = None,
    still: np.ndarray | None = None,
) -> np.ndarray:
    """Per frame, how much the mouth changed since the frame before (square, luma levels
    squared; the first frame 0): ``mouth_motion`` on frame differences instead of a high-pass
    and a span, so that it is local to a frame. A frozen mouth's frames read the picture's
    noise from the second frame of a freeze to its last, where ``mouth_motion`` still carries
    the motion around them for its high-pass and span (0.15-0.3 s into a freeze at either
    end); a speaking mouth's read that noise now and then too (it holds a vowel, a closure),
    so it places a freeze's edges but cannot find one (``lipsync``: the episode's edges).
    ``still``: as ``mouth_motion``'s."""
    span = max(3, int(round(MOTION_SPAN_S * fps)))
    d = np.diff(grids, axis=0, prepend=grids[:1])
    dp = None if pose is None else np.diff(pose, axis=0, prepend=pose[:1])
    x = _mouth_cells(d, dp, span, still)
    return _mouth_level(x * x)
