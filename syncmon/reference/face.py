"""A cheap synthetic face in YUV 4:2:0 whose mouth opening is given per frame.

Only the luma plane changes per frame (chroma is the face's static colouring), which keeps
rendering well under a millisecond at 720p. The head sways slowly and the eyes blink at
irregular times, neither following the speech, so that the lip-sync estimator is tested against
motion it has to ignore. 24 blocks along the bottom and top edges carry the frame slot in
Gray code (a timecode burnt into the picture), which also keeps consecutive frames distinct.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .articulation import Pose

TIMECODE_BITS = 24


@dataclass(frozen=True)
class YuvFrame:
    """Planar I420 picture: ``y`` (h, w), ``u`` and ``v`` (h/2, w/2), all uint8."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    def to_i420(self) -> np.ndarray:
        """The planes stacked as ``av.VideoFrame.from_ndarray(format='yuv420p')`` wants them."""
        h, w = self.y.shape
        uv = np.concatenate([self.u.reshape(-1), self.v.reshape(-1)]).reshape(h // 2, w)
        return np.concatenate([self.y, uv], axis=0)


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / max(ry, 1e-6)) ** 2 + ((xx - cx) / max(rx, 1e-6)) ** 2 <= 1.0


class Blinks:
    """Blinks of 150 ms at irregular times (2-5 s apart): eyes that move, not with the speech."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._times = np.cumsum(rng.uniform(2.0, 5.0, 4096))

    def closure(self, t: float) -> float:
        """Eyelid closure in [0, 1] at scene time ``t``."""
        i = int(np.searchsorted(self._times, t))
        near = min(
            abs(t - self._times[max(i - 1, 0)]), abs(t - self._times[min(i, self._times.size - 1)])
        )
        return float(max(0.0, 1.0 - near / 0.075))


def warp_small(
    img: np.ndarray, dx: float, dy: float, theta: float, cy: float, cx: float
) -> np.ndarray:
    """``img`` moved by (dx, dy) pixels and turned by a small angle ``theta`` (radians) about
    (cy, cx): a shear per row, then per column, with linear interpolation (a few ms at 720p,
    against tens for a general affine resampling)."""
    h, w = img.shape
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    sx = xs - (dx - theta * (ys - cy))
    x0 = np.floor(sx).astype(np.int32)
    f = sx - x0
    rows = np.arange(h)[:, None]
    tmp = img[rows, np.clip(x0, 0, w - 1)] * (1 - f) + img[rows, np.clip(x0 + 1, 0, w - 1)] * f
    sy = ys - (dy + theta * (xs - cx))
    y0 = np.floor(sy).astype(np.int32)
    g = sy - y0
    cols = np.arange(w)[None, :]
    return np.asarray(
        tmp[np.clip(y0, 0, h - 1), cols] * (1 - g) + tmp[np.clip(y0 + 1, 0, h - 1), cols] * g
    )


class FaceRenderer:
    """Renders the reference face at ``width`` x ``height`` (both even).

    ``motion_px``: the largest head motion (at 360p) that ``render`` will be given in a pose;
    the face's sprite keeps that margin.
    """

    def __init__(self, *, width: int, height: int, seed: int = 7, motion_px: float = 0.0) -> None:
        if width % 2 or height % 2 or width < 64 or height < 64:
            raise ValueError(f"resolution must be even and at least 64x64, got {width}x{height}")
        self.width, self.height = width, height
        rng = np.random.default_rng(seed)
        h, w = height, width
        s = min(w, h)
        self._sway_px = max(2, s // 60)
        # the sprite holds the face with a margin so that sway is a slice, not a redraw
        m = self._sway_px + int(np.ceil(1.5 * motion_px * h / 360.0))
        bg = np.linspace(70, 110, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
        self._bg = bg.astype(np.uint8)
        self._fcx, self._fcy = w / 2, h * 0.5
        self._frx, self._fry = s * 0.26, s * 0.36
        sy0, sy1 = int(self._fcy - self._fry) - m, int(self._fcy + self._fry) + m
        sx0, sx1 = int(self._fcx - self._frx) - m, int(self._fcx + self._frx) + m
        self._box = (max(sy0, 0), min(sy1, h), max(sx0, 0), min(sx1, w))
        by0, by1, bx0, bx1 = self._box
        bh, bw = by1 - by0, bx1 - bx0
        cy, cx = self._fcy - by0, self._fcx - bx0
        face = self._bg[by0:by1, bx0:bx1].astype(np.float32)
        skin = _ellipse(bh, bw, cy, cx, self._fry, self._frx)
        shade = 175 + 15 * np.cos(np.linspace(-1.2, 1.2, bw))[None, :]
        face = np.where(skin, shade, face)
        face += rng.normal(0, 1.5, face.shape).astype(np.float32) * skin  # skin texture
        self._eyes = [(cy - self._fry * 0.25, cx + d * self._frx * 0.4) for d in (-1, 1)]
        for ey, ex in self._eyes:
            face[_ellipse(bh, bw, ey, ex, self._fry * 0.07, self._frx * 0.18)] = 235
            face[_ellipse(bh, bw, ey, ex, self._fry * 0.05, self._frx * 0.07)] = 30
        nose = _ellipse(bh, bw, cy + self._fry * 0.1, cx, self._fry * 0.12, self._frx * 0.08)
        face[nose] -= 20
        self._sprite = np.clip(face, 0, 255).astype(np.uint8)
        self._skin = skin
        self._mouth = (cy + self._fry * 0.48, cx)
        self._mouth_rx = self._frx * 0.34
        self._mouth_ry_max = self._fry * 0.17
        # chroma: warm face on a bluish background (static)
        u = np.full((h // 2, w // 2), 140, np.uint8)
        v = np.full((h // 2, w // 2), 120, np.uint8)
        sk = np.zeros((h, w), bool)
        sk[by0:by1, bx0:bx1] = skin
        u[sk[::2, ::2]] = 110
        v[sk[::2, ::2]] = 150
        self._u, self._v = u, v
        self._block = max(4, w // 80)
        self._blinks = Blinks(rng)

    def sway(self, t: float) -> tuple[int, int]:
        """Head position offset (dy, dx) in pixels at scene time ``t``."""
        a = self._sway_px
        return (
            int(round(a * 0.5 * np.sin(2 * np.pi * 0.13 * t))),
            int(round(a * np.sin(2 * np.pi * 0.21 * t + 1.0))),
        )

    def blink(self, t: float) -> float:
        """Eyelid closure in [0, 1]: blinks of 150 ms at irregular times."""
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
        """The picture at scene time ``scene_t``, mouth opened ``mouth_open`` (0 shut, 1 open).

        ``pose`` (from ``articulation.Articulator``) adds the mouth's width and the head's
        speech-driven motion; ``gain`` scales the luma (an auto-exposure step)."""
        y = self._bg.copy()
        by0, by1, bx0, bx1 = self._box
        face = self._sprite.copy()
        my, mx = self._mouth
        width = 1.0 if pose is None else float(np.clip(pose.mouth_width, 0.5, 1.3))
        rx = self._mouth_rx * width
        ry = 1.0 + self._mouth_ry_max * float(np.clip(mouth_open, 0.0, 1.0))
        r0, r1 = int(my - self._mouth_ry_max - 3), int(my + self._mouth_ry_max + 4)
        c0, c1 = int(mx - 1.3 * self._mouth_rx - 3), int(mx + 1.3 * self._mouth_rx + 4)
        sub = face[r0:r1, c0:c1]
        lips = _ellipse(r1 - r0, c1 - c0, my - r0, mx - c0, ry + 2.5, rx + 2)
        inner = _ellipse(r1 - r0, c1 - c0, my - r0, mx - c0, ry, rx)
        sub[lips] = 115
        sub[inner] = 35
        closure = self.blink(scene_t)
        if closure > 0:
            for ey, ex in self._eyes:
                eh = self._fry * 0.08
                top = int(ey - eh)
                lid = int(top + 2 * eh * closure)
                e0, e1 = int(ex - self._frx * 0.2), int(ex + self._frx * 0.2)
                face[top:lid, e0:e1] = np.where(
                    self._skin[top:lid, e0:e1], 170, face[top:lid, e0:e1]
                )
        if pose is not None and (pose.head_dy or pose.head_dx or pose.head_roll_deg):
            self._moved(y, face, pose, scene_t)
        else:
            self._slid(y, face, scene_t)
        if gain != 1.0:
            y = np.clip(y.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        self._timecode(y, slot)
        return YuvFrame(y, self._u, self._v)

    def _moved(self, y: np.ndarray, face: np.ndarray, pose: Pose, scene_t: float) -> None:
        """The head moved by the pose (sub-pixel, with roll about the neck) plus its sway."""
        by0, by1, bx0, bx1 = self._box
        k = self.height / 360.0
        sy, sx = self.sway(scene_t)
        cy = self._fcy + self._fry - by0  # the neck
        cx = self._fcx - bx0
        theta = float(np.deg2rad(pose.head_roll_deg))
        args = (pose.head_dx * k + sx, pose.head_dy * k + sy, theta, cy, cx)
        moved = warp_small(face.astype(np.float32), *args)
        alpha = warp_small(self._skin.astype(np.float32), *args)
        region = y[by0:by1, bx0:bx1].astype(np.float32)
        y[by0:by1, bx0:bx1] = np.clip(alpha * moved + (1 - alpha) * region + 0.5, 0, 255)

    def _slid(self, y: np.ndarray, face: np.ndarray, scene_t: float) -> None:
        by0, by1, bx0, bx1 = self._box
        dy, dx = self.sway(scene_t)
        ty0, ty1 = max(by0 + dy, 0), min(by1 + dy, self.height)
        tx0, tx1 = max(bx0 + dx, 0), min(bx1 + dx, self.width)
        src = face[ty0 - by0 - dy : ty1 - by0 - dy, tx0 - bx0 - dx : tx1 - bx0 - dx]
        skin = self._skin[ty0 - by0 - dy : ty1 - by0 - dy, tx0 - bx0 - dx : tx1 - bx0 - dx]
        region = y[ty0:ty1, tx0:tx1]
        region[skin] = src[skin]

    def _timecode(self, y: np.ndarray, slot: int) -> None:
        # Gray code: one block changes per slot. Bit i sits in column i % 16 of the bottom
        # (i < 16) or top row of a 16x16 grid, so that no two changes share a grid cell and
        # cancel in its mean (after a dropped frame two bits change at once).
        code = slot ^ (slot >> 1)
        b = self._block
        step = self.width // 16
        for bit in range(TIMECODE_BITS):
            on = (code >> bit) & 1
            row = self.height - 2 * b if bit < 16 else b
            col = (bit % 16) * step + (step - b) // 2
            y[row : row + b, col : col + b] = 230 if on else 20
