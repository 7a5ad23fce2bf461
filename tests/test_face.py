"""Finding the face without motion (``syncmon.analysis.face``): the real OpenCV cascade on the
reference avatar's photographic and cartoon faces, and the mouth-motion measure on face grids
whose truth is built in."""

from __future__ import annotations

import numpy as np
import pytest

from syncmon.analysis.face import (
    CONTROL_CELLS,
    FACE_GRID,
    LOST_AFTER,
    MOUTH_CELLS,
    MOVING_LEVEL,
    SEARCH_EVERY_S,
    SEARCH_MAX_S,
    TRACK_EVERY_S,
    UPPER_CELLS,
    FaceTrack,
    mouth_motion,
)
from syncmon.analysis.lipsync import _highpass_matrix
from syncmon.reference import ReferenceAvatar


@pytest.mark.parametrize(("renderer", "size"), [("photo", (640, 360)), ("photo", (1280, 720))])
def test_the_face_box_holds_the_photographic_mouth(renderer: str, size: tuple[int, int]) -> None:
    av = ReferenceAvatar(width=size[0], height=size[1], renderer=renderer)
    r0, r1, c0, c1 = av.face._mouth_box  # type: ignore[union-attr]
    my, mx = (r0 + r1) / 2, (c0 + c1) / 2
    track = FaceTrack()
    frame = next(iter(av.frames(1.0))).frame
    got = track.update(0.0, frame.y)
    assert got is not None and track.box is not None
    x, y, w, h = track.box
    # the mouth lies in the box's lower half, near its middle: where MOUTH_CELLS look
    assert x + 0.3 * w <= mx <= x + 0.7 * w, (track.box, mx)
    assert y + 0.6 * h <= my <= y + 1.1 * h, (track.box, my)
    segment, grid = got
    assert grid.shape == (FACE_GRID, FACE_GRID) and segment == 1


def test_the_cartoon_face_is_found_too() -> None:
    av = ReferenceAvatar(renderer="synthetic")
    track = FaceTrack()
    assert track.update(0.0, next(iter(av.frames(1.0))).frame.y) is not None


def test_a_picture_without_a_face_gives_none_and_the_box_is_dropped_when_the_face_leaves() -> None:
    track = FaceTrack()
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 255, (360, 640), dtype=np.uint8)
    assert track.update(0.0, noise) is None
    face = next(iter(ReferenceAvatar(renderer="photo").frames(1.0))).frame.y
    # searching backs off after a miss, never beyond SEARCH_MAX_S
    t, found_at = 0.0, None
    while found_at is None and t < 2 * SEARCH_MAX_S:
        t += 0.5
        if track.update(t, face) is not None:
            found_at = t
    assert found_at is not None and found_at <= SEARCH_MAX_S + 0.5, found_at
    # the face is kept between detections, then dropped after LOST_AFTER misses in a row,
    # looked for again SEARCH_EVERY_S after each
    kept = []
    while track.update(t + 0.5, noise) is not None:
        t += 0.5
        kept.append(t)
    assert kept, "the box was dropped before the next detection was due"
    assert kept[-1] - found_at <= TRACK_EVERY_S + LOST_AFTER * SEARCH_EVERY_S, kept[-1]
    assert track.box is None and track.segment == 2


def _grids(mouth_amp: float, head_amp: float, n: int = 200, fps: float = 25.0) -> np.ndarray:
    """Face grids over ``n`` frames: a textured face shifted by a nodding head (sub-pixel,
    bilinear: the luma of every cell follows its own gradient), and the mouth's cells darkened
    by an opening of ``mouth_amp`` luma levels at a wavering syllable rate."""
    rng = np.random.default_rng(3)
    base = rng.uniform(60, 200, (FACE_GRID + 4, FACE_GRID + 4))
    t = np.arange(n) / fps
    dy = head_amp * np.sin(2 * np.pi * 0.8 * t)
    dx = 0.5 * head_amp * np.sin(2 * np.pi * 1.3 * t + 1.0)
    opening = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + 2.0 * np.sin(2 * np.pi * 0.37 * t))
    out = np.empty((n, FACE_GRID * FACE_GRID))
    for k in range(n):
        iy, fy = divmod(2.0 + dy[k], 1.0)
        ix, fx = divmod(2.0 + dx[k], 1.0)
        iy, ix = int(iy), int(ix)
        a = base[iy : iy + FACE_GRID, ix : ix + FACE_GRID]
        b = base[iy + 1 : iy + 1 + FACE_GRID, ix : ix + FACE_GRID]
        c = base[iy : iy + FACE_GRID, ix + 1 : ix + 1 + FACE_GRID]
        d = base[iy + 1 : iy + 1 + FACE_GRID, ix + 1 : ix + 1 + FACE_GRID]
        g = (1 - fy) * (1 - fx) * a + fy * (1 - fx) * b + (1 - fy) * fx * c + fy * fx * d
        g = g.ravel() + rng.normal(0, 0.5, g.size)  # coding noise
        g[MOUTH_CELLS[:4]] -= mouth_amp * opening[k]
        out[k] = g
    return out


def _motion(grids: np.ndarray, fps: float = 25.0) -> np.ndarray:
    t = np.arange(grids.shape[0]) / fps
    return mouth_motion(np.asarray(_highpass_matrix(t, 0.08) @ grids), fps)


# head motion up to 1.2 cells (~6 px on a 360p face): with the head's time courses not taken out
# (one instead of HEAD_RANK) the frozen mouth reads 15 and the moving one 6
@pytest.mark.parametrize("head_amp", [0.0, 0.4, 1.2])
def test_a_mouth_that_opens_moves_and_one_that_does_not_is_still_whatever_the_head_does(
    head_amp: float,
) -> None:
    moving = _motion(_grids(mouth_amp=40.0, head_amp=head_amp))
    frozen = _motion(_grids(mouth_amp=0.0, head_amp=head_amp))
    inner = slice(10, -10)
    assert np.min(moving[inner]) >= MOVING_LEVEL, np.percentile(moving, [0, 50])
    assert np.max(frozen[inner]) < MOVING_LEVEL, np.percentile(frozen, [50, 100])


def test_the_cell_sets_cover_the_grid_once() -> None:
    cells = np.concatenate([MOUTH_CELLS, UPPER_CELLS, CONTROL_CELLS])
    assert np.array_equal(np.sort(cells), np.arange(FACE_GRID * FACE_GRID))


def test_live_detection_runs_off_the_callers_thread_and_is_applied_when_done() -> None:
    track = FaceTrack(background=True)
    y = next(iter(ReferenceAvatar(renderer="photo").frames(1.0))).frame.y
    # the first call only hands the frame to the detecting thread
    assert track.update(0.0, y) is None and track.detections == 0
    # the detection finishes on its own thread; the next frame applies it
    assert track._pending is not None
    track._pending.result(timeout=30)
    assert track.update(0.04, y) is not None
    assert track.detections == 1 and track.box is not None
