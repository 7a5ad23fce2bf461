"""A photographic talking face: a real portrait whose mouth, jaw, eyes and head are animated.

The estimator must not be tuned to the reference face's cartoon. This renderer animates a
portrait that a package ships: the lips part over a dark mouth cavity with the opening, the jaw
drops with it, the eyes blink, and the head region is warped (nod, sway, roll about the neck) by
the pose, composited through a soft mask as an image-warping avatar model would. Luma only
changes per frame; chroma is the photo's own. Two portraits (``PORTRAITS``):

* ``photo``: scikit-image's ``astronaut`` (upper-body framing, the head about a third of the
  frame height, a busy background of a flag and a model, a smile covered with closed lips);
* ``hopper``: matplotlib's sample ``grace_hopper.jpg`` (a 512 x 600 portrait: an older face
  with glasses and a cap, the face about half the frame height, a flag behind). It was added
  after everything else was set, to judge the estimator and the lip-still account on a face
  they were never developed on; nothing is tuned to it.

scikit-image and matplotlib are needed only for these renderers (the ``test`` extra installs
them); nothing else of matplotlib is used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .articulation import Pose
from .face import Blinks, YuvFrame, warp_small


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())  # type: ignore[no-untyped-call]


def _hopper() -> np.ndarray:
    from importlib.resources import files

    import av

    path = files("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    with path.open("rb") as f, av.open(f) as c:
        frame = next(c.decode(video=0))
        return np.asarray(frame.to_ndarray(format="rgb24"))


@dataclass(frozen=True)
class Portrait:
    """A portrait and its landmarks (row, column in its pixels), read off the picture."""

    load: Callable[[], np.ndarray]  # RGB, height x width x 3, height >= width
    mouth: tuple[float, float]
    mouth_half_w: float
    eyes: tuple[tuple[float, float], tuple[float, float]]
    eye_half: tuple[float, float]  # a lid's half height and half width
    chin: float
    head: tuple[float, float, float, float]  # centre row, centre col, half-height, half-width
    neck: tuple[float, float]
    cover_mouth: bool  # draw closed lips over it (a smile showing teeth)
    lid_luma: float


PORTRAITS = {
    "photo": Portrait(
        _astronaut,
        mouth=(146.0, 223.0),
        mouth_half_w=21.0,
        eyes=((101.0, 202.0), (101.0, 247.0)),
        eye_half=(7.0, 11.0),
        chin=182.0,
        head=(108.0, 225.0, 118.0, 102.0),
        neck=(205.0, 225.0),
        cover_mouth=True,
        lid_luma=150.0,
    ),
    "hopper": Portrait(
        _hopper,
        mouth=(277.0, 267.0),
        mouth_half_w=34.0,
        eyes=((188.0, 220.0), (187.0, 305.0)),
        eye_half=(9.0, 15.0),
        chin=327.0,
        head=(190.0, 262.0, 150.0, 112.0),
        neck=(372.0, 262.0),
        cover_mouth=False,
        lid_luma=140.0,
    ),
}


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.asarray(x * x * (3 - 2 * x))


class PhotoRenderer:
    """Renders the animated portrait at ``width`` x ``height`` (both even, width >= height)."""

    def __init__(self, *, width: int, height: int, seed: int = 7, portrait: str = "photo") -> None:
        if width % 2 or height % 2 or height < 64 or width < height:
            raise ValueError(f"resolution must be even, landscape, >= 64 high: {width}x{height}")
        if portrait not in PORTRAITS:
            raise ValueError(f"portrait must be one of {sorted(PORTRAITS)}, got {portrait!r}")
        import av

        self.width, self.height = width, height
        self._p = p = PORTRAITS[portrait]
        rgb = p.load()
        self._k = height / rgb.shape[0]
        # the portrait's height fills the frame; its width, scaled alike (even), is padded
        pw = min(width, 2 * int(round(rgb.shape[1] * self._k / 2)))
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            width=pw, height=height, format="yuv420p"
        )
        planes = frame.to_ndarray()
        y = planes[:height].astype(np.float32)
        uv = planes[height:].reshape(2, height // 2, pw // 2)
        pad = (width - pw) // 2 // 2 * 2  # even: the chroma is padded by half
        self._pad = pad
        self._y = np.pad(y, ((0, 0), (pad, width - pw - pad)), mode="edge")
        cpad = ((0, 0), (pad // 2, (width - pw - pad) // 2))
        self._u = np.pad(uv[0], cpad, mode="edge")
        self._v = np.pad(uv[1], cpad, mode="edge")
        # the mouth's geometry (jaw drop, lip band) in units of the astronaut's mouth
        self._unit = p.mouth_half_w / 21.0
        rng = np.random.default_rng(seed)
        self._blinks = Blinks(rng)
        self._close_mouth()
        self._head_roi()

    def _pt(self, r: float, c: float) -> tuple[float, float]:
        return r * self._k, c * self._k + self._pad

    def _close_mouth(self) -> None:
        """Cover the smile's teeth with lips: the neutral, closed mouth (where the portrait
        does not show one already), and the box the mouth is drawn in."""
        my, mx = self._pt(*self._p.mouth)
        hw = self._p.mouth_half_w * self._k
        r0, r1 = int(my - 0.5 * hw), int(my + 0.5 * hw) + 1
        c0, c1 = int(mx - 1.3 * hw), int(mx + 1.3 * hw) + 1
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        d = ((yy - my) / (0.32 * hw)) ** 2 + ((xx - mx) / hw) ** 2
        alpha = _smoothstep((1.25 - d) / 0.5)
        lips = 118.0 - 25.0 * np.exp(-(((yy - my) / (0.05 * hw + 0.6)) ** 2))  # the seam
        if self._p.cover_mouth:
            self._y[r0:r1, c0:c1] = alpha * lips + (1 - alpha) * self._y[r0:r1, c0:c1]
        self._mouth_box = (r0 - int(0.6 * hw), r1 + int(0.8 * hw), c0, c1)

    def _head_roi(self) -> None:
        head = self._p.head
        cy, cx = self._pt(head[0], head[1])
        ry, rx = head[2] * self._k, head[3] * self._k
        r0, r1 = max(0, int(cy - 1.15 * ry)), min(self.height, int(cy + 1.15 * ry))
        c0, c1 = max(0, int(cx - 1.2 * rx)), min(self.width, int(cx + 1.2 * rx))
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        self._head_alpha = _smoothstep((1.12 - d) / 0.12)
        self._head_box = (r0, r1, c0, c1)

    def blink(self, t: float) -> float:
        return self._blinks.closure(t)

    def render(
        self,
        *,
        mouth_open: float,
        scene_t: float,
        slot: int,
        pose: Pose | None = None,
        gain: float = 1.0,
    ) -> YuvFrame:
        y = self._y.copy()
        opening = float(np.clip(mouth_open, 0.0, 1.0))
        width = 1.0 if pose is None else float(np.clip(pose.mouth_width, 0.6, 1.3))
        self._mouth(y, opening, width)
        closure = self.blink(scene_t)
        if closure > 0:
            self._lids(y, closure)
        if pose is not None:
            self._move_head(y, pose, scene_t)
        if gain != 1.0:
            y *= gain
        return YuvFrame(np.clip(y + 0.5, 0, 255).astype(np.uint8), self._u, self._v)

    def _mouth(self, y: np.ndarray, opening: float, width: float) -> None:
        """Lips parted over a dark cavity (upper teeth showing), the jaw lowered with it."""
        k = self._k
        u = k * self._unit  # frame pixels per astronaut mouth pixel
        half_w = self._p.mouth_half_w * k
        my, mx = self._pt(*self._p.mouth)
        hw = half_w * width
        r0, r1, c0, c1 = self._mouth_box
        # the jaw: rows below the mouth move down by up to 5 px (the astronaut's scale) with
        # the opening
        drop = 5.0 * u * opening
        if drop > 0.05:
            chin = self._p.chin * k
            j0, j1 = int(my), min(self.height, int(chin + 12 * u))
            jc0, jc1 = int(mx - 2.2 * half_w), int(mx + 2.2 * half_w)
            roi = y[j0:j1, jc0:jc1]
            yy, xx = np.mgrid[j0:j1, jc0:jc1].astype(np.float32)
            wy = _smoothstep((yy - my) / max(1.0, (chin - my) * 0.5)) * _smoothstep(
                (chin + 12 * u - yy) / (12 * u)
            )
            wx = _smoothstep((2.2 * half_w - np.abs(xx - mx)) / (0.8 * half_w))
            src = yy - drop * wy * wx
            i0 = np.clip(np.floor(src).astype(np.int32) - j0, 0, roi.shape[0] - 1)
            f = src - np.floor(src)
            i1 = np.clip(i0 + 1, 0, roi.shape[0] - 1)
            cols = np.arange(roi.shape[1])[None, :]
            y[j0:j1, jc0:jc1] = roi[i0, cols] * (1 - f) + roi[i1, cols] * f
        if opening > 0.02:
            yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
            cy = my + 0.5 * drop
            half_h = 0.5 + 0.42 * hw * opening
            d = ((yy - cy) / half_h) ** 2 + ((xx - mx) / (0.9 * hw)) ** 2
            cavity = _smoothstep((1.0 - d) / 0.35)
            # upper teeth: a bright band along the top of the cavity
            teeth = _smoothstep(1.0 - np.abs(yy - (cy - 0.55 * half_h)) / (0.3 * half_h + 0.5))
            shade = 38.0 + 150.0 * teeth * (half_h > 2.0)
            roi = y[r0:r1, c0:c1]
            y[r0:r1, c0:c1] = cavity * shade + (1 - cavity) * roi

    def _lids(self, y: np.ndarray, closure: float) -> None:
        k = self._k
        for er, ec in self._p.eyes:
            cy, cx = self._pt(er, ec)
            h, w = self._p.eye_half[0] * k, self._p.eye_half[1] * k
            r0, r1 = int(cy - h), int(cy - h + 2 * h * closure) + 1
            c0, c1 = int(cx - w), int(cx + w) + 1
            y[r0:r1, c0:c1] = self._p.lid_luma

    def _move_head(self, y: np.ndarray, pose: Pose, scene_t: float) -> None:
        k = self.height / 360.0
        r0, r1, c0, c1 = self._head_box
        ny, nx = self._pt(*self._p.neck)
        # idle sway (not driven by speech): the head is never perfectly still
        sway = 0.6 * k * np.sin(2 * np.pi * 0.17 * scene_t + 0.4)
        roi = y[r0:r1, c0:c1]
        moved = warp_small(
            roi,
            pose.head_dx * k + sway,
            pose.head_dy * k,
            float(np.deg2rad(pose.head_roll_deg)),
            ny - r0,
            nx - c0,
        )
        a = self._head_alpha
        y[r0:r1, c0:c1] = a * moved + (1 - a) * roi
