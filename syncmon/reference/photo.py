"""A photographic talking face: a real portrait whose mouth, jaw, eyes and head are animated.

The estimator must not be tuned to the reference face's cartoon. This renderer animates the
portrait that scikit-image ships (``skimage.data.astronaut``: upper-body framing, the head about
a third of the frame height, a busy background of a flag and a model): the lips part over a dark
mouth cavity with the opening, the jaw drops with it, the eyes blink, and the head region is
warped (nod, sway, roll about the neck) by the pose, composited through a soft mask as an
image-warping avatar model would. Luma only changes per frame; chroma is the photo's own.

scikit-image is needed only for this renderer (the ``test`` extra installs it).
"""

from __future__ import annotations

import numpy as np

from .articulation import Pose
from .face import Blinks, YuvFrame, warp_small

# landmarks in the 512 x 512 portrait (row, column), read off the picture
_MOUTH = (146.0, 223.0)
_MOUTH_HALF_W = 21.0
_EYES = ((101.0, 202.0), (101.0, 247.0))
_CHIN = 182.0
_HEAD = (108.0, 225.0, 118.0, 102.0)  # centre row, centre col, half-height, half-width
_NECK = (205.0, 225.0)
SOURCE = 512


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.asarray(x * x * (3 - 2 * x))


class PhotoRenderer:
    """Renders the animated portrait at ``width`` x ``height`` (both even, width >= height)."""

    def __init__(self, *, width: int, height: int, seed: int = 7) -> None:
        if width % 2 or height % 2 or height < 64 or width < height:
            raise ValueError(f"resolution must be even, landscape, >= 64 high: {width}x{height}")
        import av
        from skimage import data

        self.width, self.height = width, height
        rgb = np.ascontiguousarray(data.astronaut())  # type: ignore[no-untyped-call]
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            width=height, height=height, format="yuv420p"
        )
        planes = frame.to_ndarray()
        y = planes[:height].astype(np.float32)
        uv = planes[height:].reshape(2, height // 2, height // 2)
        pad = (width - height) // 2
        self._pad = pad
        self._y = np.pad(y, ((0, 0), (pad, width - height - pad)), mode="edge")
        self._u = np.pad(uv[0], ((0, 0), (pad // 2, (width - height - pad) // 2)), mode="edge")
        self._v = np.pad(uv[1], ((0, 0), (pad // 2, (width - height - pad) // 2)), mode="edge")
        self._k = height / SOURCE
        rng = np.random.default_rng(seed)
        self._blinks = Blinks(rng)
        self._close_mouth()
        self._head_roi()

    def _pt(self, r: float, c: float) -> tuple[float, float]:
        return r * self._k, c * self._k + self._pad

    def _close_mouth(self) -> None:
        """Cover the smile's teeth with lips: the neutral, closed mouth."""
        my, mx = self._pt(*_MOUTH)
        hw = _MOUTH_HALF_W * self._k
        r0, r1 = int(my - 0.5 * hw), int(my + 0.5 * hw) + 1
        c0, c1 = int(mx - 1.3 * hw), int(mx + 1.3 * hw) + 1
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
        d = ((yy - my) / (0.32 * hw)) ** 2 + ((xx - mx) / hw) ** 2
        alpha = _smoothstep((1.25 - d) / 0.5)
        lips = 118.0 - 25.0 * np.exp(-(((yy - my) / (0.05 * hw + 0.6)) ** 2))  # the seam
        self._y[r0:r1, c0:c1] = alpha * lips + (1 - alpha) * self._y[r0:r1, c0:c1]
        self._mouth_box = (r0 - int(0.6 * hw), r1 + int(0.8 * hw), c0, c1)

    def _head_roi(self) -> None:
        cy, cx = self._pt(_HEAD[0], _HEAD[1])
        ry, rx = _HEAD[2] * self._k, _HEAD[3] * self._k
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
        my, mx = self._pt(*_MOUTH)
        hw = _MOUTH_HALF_W * k * width
        r0, r1, c0, c1 = self._mouth_box
        # the jaw: rows below the mouth move down by up to 5 px (source scale) with the opening
        drop = 5.0 * k * opening
        if drop > 0.05:
            chin = _CHIN * k
            j0, j1 = int(my), min(self.height, int(chin + 12 * k))
            jc0, jc1 = int(mx - 2.2 * _MOUTH_HALF_W * k), int(mx + 2.2 * _MOUTH_HALF_W * k)
            roi = y[j0:j1, jc0:jc1]
            yy, xx = np.mgrid[j0:j1, jc0:jc1].astype(np.float32)
            wy = _smoothstep((yy - my) / max(1.0, (chin - my) * 0.5)) * _smoothstep(
                (chin + 12 * k - yy) / (12 * k)
            )
            wx = _smoothstep(
                (2.2 * _MOUTH_HALF_W * k - np.abs(xx - mx)) / (0.8 * _MOUTH_HALF_W * k)
            )
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
        for er, ec in _EYES:
            cy, cx = self._pt(er, ec)
            h, w = 7.0 * k, 11.0 * k
            r0, r1 = int(cy - h), int(cy - h + 2 * h * closure) + 1
            c0, c1 = int(cx - w), int(cx + w) + 1
            y[r0:r1, c0:c1] = 150.0

    def _move_head(self, y: np.ndarray, pose: Pose, scene_t: float) -> None:
        k = self.height / 360.0
        r0, r1, c0, c1 = self._head_box
        ny, nx = self._pt(*_NECK)
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
