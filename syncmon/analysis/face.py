"""Where the avatar's face is, and whether its mouth moves while the voice speaks.

The content estimator finds the mouth by what follows the voice (``lipsync``). A mouth frozen
from the start never does, so it is never found there, and a stream whose avatar stopped
animating before the monitor saw it move would count no lip-still second. The face is found
instead by a detector that needs no motion: OpenCV's Haar frontal-face cascade, whose model
ships inside ``opencv-python-headless`` 4.x (5.x no longer carries it), run on a 320-px-wide
copy of the frame every 10 s once a face is found (again after 1 s when it is missed; the box
is dropped after three misses in a row), every 1-8 s while searching (~15-35 ms each here).
Between detections the box stays where it is: the head's own motion inside it is taken out
below, not followed.

Each frame is reduced to the mean luma of a ``FACE_GRID`` over the face box (grown a little to
take in the chin). Over an estimator window (``mouth_motion``):

1. the cells are high-passed (the estimator's own high-pass);
2. the head's rigid motion (nods, roll, exposure steps) is a few time courses shared by every
   cell of the face, to first order its luma gradient times the displacement: the leading
   ``HEAD_RANK`` time courses of the upper face (eyes, nose, forehead) are taken out of the
   mouth's cells and of a control set (the lower face beside and below the mouth);
3. what is left in the mouth's three most active cells is its own motion (RMS over 0.4 s, luma
   levels); what is left in the control's three most active cells is what the cleaning leaves
   of a head that does not hold still (second-order motion, coding noise).

The mouth moves when ``own**2 / max(control, floor)`` reaches ``MOVING_LEVEL``: its own motion
large in absolute terms and against what the cleaning leaves elsewhere. Measured on the
project's material (photographic and cartoon faces, 2-6 px nods with 0.5-3 degree roll,
exposure steps, 15-30 fps, 360p-720p, H.264 and VP8 at 150-1200 kbps): speaking frames of
moving mouths 9-90 (a mouth from another utterance than the voice too: it moves), of frozen
mouths 0.01-9. A head that nods by 10 px and rolls 5 degrees at 360p leaves frozen mouths at
up to 30 and is beyond what this separates.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter1d

log = logging.getLogger(__name__)

FACE_GRID = 16
DETECT_WIDTH = 320
MIN_FACE_PX = 20  # at DETECT_WIDTH: a face 40 px wide at 640
SEARCH_EVERY_S = 1.0  # while no face is known; doubling after each miss, up to SEARCH_MAX_S
SEARCH_MAX_S = 8.0
TRACK_EVERY_S = 10.0
LOST_AFTER = 3  # detections in a row that find no face before the box is dropped
MOVED_IOU = 0.6  # a detection overlapping the box less than this (twice in a row) moves it
# the face box grown to take in the chin and jaw: (left, top, right, bottom) in box widths
GROW = (0.1, 0.05, 0.1, 0.15)

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
CONTROL_CELLS = np.setdiff1d(np.nonzero(_rows > int(0.55 * G))[0], MOUTH_CELLS)
HEAD_RANK = 10
TOP_CELLS = 3
MOTION_SPAN_S = 0.4
CONTROL_FLOOR = 1.0  # luma: a control flatter than this (a cartoon's flat skin) is noise
MOVING_LEVEL = 10.0


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


class FaceTrack:
    """The face box over a stream and each frame's face grid.

    ``update`` returns (segment, grid): ``segment`` changes whenever the box does (grids of
    different boxes are not comparable), ``grid`` is FACE_GRID x FACE_GRID mean luma over the
    grown box; None while no face is known."""

    def __init__(self, background: bool = False) -> None:
        self.box: np.ndarray | None = None  # x, y, w, h in frame pixels
        self.segment = 0
        self._candidate: np.ndarray | None = None
        self._next_t = -np.inf
        self._misses = 0
        self.detections = 0
        self.errors = 0
        self._off = False  # OpenCV or its model missing (logged once)
        # live: detections run on a thread of their own (OpenCV releases the GIL), so that the
        # 15-35 ms of one (and the cascade's first reading, ~100 ms) never delay the event loop
        # that stamps the audio's arrival; a recording detects in line (deterministic)
        self._background = background
        self._pending: Future[Found | None] | None = None

    @property
    def available(self) -> bool:
        if not self._off and not self._background and _load_cascade() is None:
            self._off = True
        return not self._off

    def update(self, t: float, luma: np.ndarray) -> tuple[int, np.ndarray] | None:
        if self._pending is not None and self._pending.done():
            pending, self._pending = self._pending, None
            try:
                self._apply(pending.result(), t)
            except Exception as e:  # a detection that failed is a miss, logged and counted
                self.errors += 1
                log.warning("face detection failed (%s; %d so far)", e, self.errors)
                self._apply((np.zeros((0, 4)), np.zeros(0), 1.0), t)
        if t >= self._next_t and self._pending is None and self.available:
            if self._background:
                self._pending = _executor().submit(_find, np.array(luma))
                self._next_t = np.inf  # scheduled once it is applied
            else:
                self._apply(_find(luma), t)
        if self.box is None:
            return None
        return self.segment, face_grid(luma, self.box)

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
        boxes, weights, scale = found_boxes
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
        found = np.asarray(boxes[int(np.argmax(np.ravel(weights)))], dtype=np.float64) / scale
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


Found = tuple[np.ndarray, np.ndarray, float]  # boxes at detection scale, their weights, scale

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncmon-face")
        return _pool


def _find(luma: np.ndarray) -> Found | None:
    """The cascade's faces in ``luma`` (on a DETECT_WIDTH copy); None without a cascade."""
    import cv2

    cascade = _load_cascade()
    if cascade is None:
        return None
    h, w = luma.shape
    scale = DETECT_WIDTH / w if w > DETECT_WIDTH else 1.0
    small = (
        cv2.resize(luma, (DETECT_WIDTH, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if scale < 1.0
        else np.ascontiguousarray(luma)
    )
    boxes, _, weights = cascade.detectMultiScale3(
        small, 1.1, 3, minSize=(MIN_FACE_PX, MIN_FACE_PX), outputRejectLevels=True
    )
    return np.asarray(boxes).reshape(-1, 4), np.ravel(np.asarray(weights)), scale


def face_grid(luma: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Mean luma of FACE_GRID x FACE_GRID cells over the grown face ``box``."""
    import cv2

    x, y, w, h = (float(v) for v in box)
    x0 = int(max(0, x - GROW[0] * w))
    y0 = int(max(0, y - GROW[1] * h))
    x1 = int(min(luma.shape[1], x + (1 + GROW[2]) * w))
    y1 = int(min(luma.shape[0], y + (1 + GROW[3]) * h))
    # every step-th pixel: a cell still averages dozens, and a cartoon's 600-px face costs
    # what a photo's 150-px one does
    step = max(1, (x1 - x0) // (8 * G))
    patch = luma[y0:y1:step, x0:x1:step]
    if patch.shape[0] < G or patch.shape[1] < G:
        return np.zeros((G, G), np.float32)
    return np.asarray(cv2.resize(patch, (G, G), interpolation=cv2.INTER_AREA), dtype=np.float32)


def _basis(x: np.ndarray, rank: int) -> np.ndarray:
    """Orthonormal frames x rank basis of the strongest time courses of ``x`` (frames x cells):
    a randomized range finder with two power iterations, then Rayleigh-Ritz on the small
    symmetric problem (a full decomposition cost 3-6 ms per window, and LAPACK's
    divide-and-conquer SVD failed to converge on one ordinary window of face grids)."""
    rng = np.random.default_rng(0)
    y = x @ rng.standard_normal((x.shape[1], rank + 4))
    for _ in range(2):
        y, _ = np.linalg.qr(y)
        y = x @ (x.T @ y)
    q, _ = np.linalg.qr(y)
    b = q.T @ x
    _, vecs = np.linalg.eigh(b @ b.T)
    return np.asarray(q @ vecs[:, ::-1][:, :rank])


def mouth_motion(hp_grids: np.ndarray, fps: float) -> np.ndarray:
    """Per frame, the mouth's own motion against what the cleaning leaves elsewhere
    (``own**2 / control``, see the module's docstring); ``hp_grids`` is frames x FACE_GRID**2,
    already high-passed."""
    n = hp_grids.shape[0]
    q = _basis(hp_grids[:, UPPER_CELLS], min(HEAD_RANK, max(1, n // 8)))

    def own(cells: np.ndarray) -> np.ndarray:
        x = hp_grids[:, cells]
        x = x - q @ (q.T @ x)
        top = np.argsort(np.sum(x * x, axis=0))[::-1][:TOP_CELLS]
        e = np.mean(x[:, top] ** 2, axis=1)
        span = max(3, int(round(MOTION_SPAN_S * fps)))
        # (a running sum can leave a rounding error below zero)
        return np.asarray(np.sqrt(np.maximum(uniform_filter1d(e, span, mode="nearest"), 0.0)))

    m, c = own(MOUTH_CELLS), own(CONTROL_CELLS)
    return np.asarray(m * m / np.maximum(c, CONTROL_FLOOR))
