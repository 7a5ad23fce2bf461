"""Finding the face without motion (``syncmon.analysis.face``): the real OpenCV cascade on the
reference avatar's photographic and cartoon faces, registration against known turns, shifts and
gains, and the mouth-motion measure on the avatar's frames against its own truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from syncmon.analysis.face import (
    FACE_GRID,
    GROW,
    LOST_AFTER,
    MOUTH_CELLS,
    MOVING_LEVEL,
    POSE_CHECK_MIN,
    REG_SIZE,
    SEARCH_EVERY_S,
    SEARCH_MAX_S,
    TRACK_EVERY_S,
    UPPER_CELLS,
    FaceTrack,
    _cells,
    _quantile,
    _Registration,
    face_crop,
    mouth_change,
    mouth_motion,
    without_pose,
)
from syncmon.analysis.filters import Highpass
from syncmon.analysis.lipstill import (
    FACE_EDGE_CHANGE,
    FACE_EDGE_MIN,
)
from syncmon.reference import Impairments, ReferenceAvatar, SpeechSource
from syncmon.reference.articulation import ArticulationConfig


@pytest.mark.parametrize(
    ("renderer", "size"),
    [
        ("photo", (640, 360)),
        ("photo", (1280, 720)),
        ("hopper", (640, 360)),
        ("hopper", (1280, 720)),
    ],
)
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
    segment, grid, pose = got
    assert grid.shape == (FACE_GRID, FACE_GRID) and segment == 1
    # the box's first frame is the registration's reference: no turn, no shift
    assert pose.shape == (3,) and not pose.any()


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


def _motion_of(av: ReferenceAvatar, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """The mouth motion of ``av``'s frames through the real face track (registration and
    all), and which frames show the mouth moving with the speech (the avatar's own truth)."""
    track = FaceTrack()
    t, grids, poses, moves = [], [], [], []
    for out in av.frames(seconds):
        got = track.update(out.pts, out.frame.y)
        assert got is not None, f"no face at {out.pts:.2f} s"
        t.append(out.pts)
        grids.append(got.grid.ravel())
        poses.append(got.pose)
        moves.append(av.mouth_moves(out.speech_t))
    hp = Highpass(np.asarray(t), 0.08)
    hp_grids = np.asarray(hp @ np.stack(grids).astype(np.float64))
    hp_pose = np.asarray(hp @ np.stack(poses).astype(np.float64))
    return mouth_motion(hp_grids, av.fps, hp_pose), np.asarray(moves)


# a head nodding 6 px and rolling 3 degrees with the speech, 250 ms ahead of it, and an
# exposure step 2 s in: before registration a photographic mouth held shut on such a head read
# 20-100 % of a speaking one
NODDING = ArticulationConfig(head_px=6.0, head_roll_deg=3.0, head_lead_s=0.25)


@pytest.mark.parametrize("renderer", ["photo", "synthetic"])
def test_a_speaking_mouth_moves_and_a_frozen_one_is_still_whatever_the_head_does(
    renderer: str,
) -> None:
    def avatar(frozen: bool) -> ReferenceAvatar:
        return ReferenceAvatar(
            renderer=renderer,
            articulation=NODDING,
            speech=SpeechSource(seed=12, consonants=True),
            impairments=Impairments(
                seed=12, lip_still=((0.0, 1e9),) if frozen else (), exposure_step_s=2.0
            ),
        )

    moving, moves = _motion_of(avatar(frozen=False), 6.0)
    frozen, _ = _motion_of(avatar(frozen=True), 6.0)
    inner = slice(10, -10)
    # the speaking frames of the moving mouth, each with its neighbours inside the span: most
    # move above the level (a closure between syllables dips)
    speaking = moving[inner][moves[inner]]
    assert speaking.size > 40, speaking.size
    assert np.percentile(speaking, 25) >= 3 * MOVING_LEVEL, np.percentile(speaking, [5, 25, 50])
    # every frame of the frozen mouth, speaking or not, under it
    assert np.max(frozen[inner]) < MOVING_LEVEL, np.percentile(frozen, [50, 95, 100])


@pytest.mark.parametrize("renderer", ["photo", "synthetic", "hopper"])
def test_a_freezes_edges_that_the_motion_blurs_are_where_the_mouths_change_steps(
    renderer: str,
) -> None:
    # a mouth frozen over [2, 4) s while the voice speaks on and the head nods
    av = ReferenceAvatar(
        renderer=renderer,
        articulation=NODDING,
        speech=SpeechSource(seed=12, consonants=True),
        impairments=Impairments(seed=12, lip_still=((2.0, 2.0),), exposure_step_s=1.7),
    )
    track = FaceTrack()
    grids, poses, frozen, moves = [], [], [], []
    for out in av.frames(6.0):
        got = track.update(out.pts, out.frame.y)
        assert got is not None, f"no face at {out.pts:.2f} s"
        grids.append(got.grid.ravel())
        poses.append(got.pose)
        frozen.append(av.lip_still(out.speech_t))
        moves.append(av.mouth_moves(out.speech_t))
    g, p = np.stack(grids).astype(np.float64), np.stack(poses).astype(np.float64)
    hp = Highpass(np.arange(len(grids)) / av.fps, 0.08)
    motion = mouth_motion(np.asarray(hp @ g), av.fps, np.asarray(hp @ p))
    change = mouth_change(g, av.fps, p)
    idx = np.flatnonzero(frozen)
    first, last = int(idx[0]), int(idx[-1])
    # the motion carries the movement around the freeze into its first and last frames
    assert np.min(motion[[first, first + 1, last - 1, last]]) >= MOVING_LEVEL, motion[idx]
    # the change does not: between frozen frames it is the picture's noise (the registration's
    # residue of the head), a tenth of a speaking mouth's at most
    noise = change[first + 1 : last + 1]
    assert np.median(noise) * 10 <= np.median(change[np.asarray(moves)]), (noise, change)
    # and the movement into and out of the freeze stands above the edge's limit
    limit = max(FACE_EDGE_MIN, FACE_EDGE_CHANGE * float(np.median(noise)))
    assert change[first] >= limit and change[last + 1] >= limit, (change[[first, last + 1]], limit)


def _textured(size: int = 160, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(rng.uniform(0, 255, (size, size)), 2.0) * 3 - 250, 0, 255)


def _warped(img: np.ndarray, dx: float, dy: float, deg: float, gain: float = 1.0) -> np.ndarray:
    import cv2

    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h * 0.9), deg, 1.0)  # about the neck
    m[:, 2] += (dx, dy)
    out = cv2.warpAffine(img.astype(np.float32), m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out * gain, 0, 255).astype(np.uint8)


INNER_UPPER = UPPER_CELLS[
    (UPPER_CELLS // FACE_GRID >= 1)
    & (UPPER_CELLS % FACE_GRID >= 1)
    & (UPPER_CELLS % FACE_GRID < FACE_GRID - 1)
]


def test_registration_takes_out_the_heads_turn_and_shift_and_the_lights_gain() -> None:
    base = _textured()
    box = np.array([40.0, 30.0, 80.0, 80.0])
    reg = _Registration(segment=1)
    ref = reg.grid(face_crop(base.astype(np.uint8), box))
    unregistered = []
    for dx, dy, deg, gain in [(2.0, -1.5, 2.0, 1.0), (-3.0, 2.0, -3.0, 1.0), (1.0, 3.0, 1.0, 0.8)]:
        moved = _warped(base, dx, dy, deg, gain)
        plain = _Registration(2).grid(face_crop(moved, box))  # its own first frame: unmoved
        unregistered.append(float(np.max(np.abs(plain - ref))))
        got = reg.grid(face_crop(moved, box))
        # its pose is the head's turn (cv2 turns counter-clockwise on screen; the registration
        # measures clockwise, y down)
        turn = math.degrees(float(reg.pose()[0]) / REG_SIZE)
        assert abs(turn + deg) < 0.2, (deg, turn)
        # the upper face (what is registered) lands on the first frame's, to within a luma
        # level or two of resampling (the box's edge takes in what moved into it from
        # outside); the shifted, turned picture was tens of levels off
        err = np.abs(got.ravel()[INNER_UPPER] - ref.ravel()[INNER_UPPER])
        assert np.median(err) < 1.5 and np.max(err) < 6.0, (dx, dy, deg, gain, err.max())
    assert min(unregistered) > 15.0, unregistered
    assert reg.resets == 0


@pytest.mark.parametrize("side", [60, 100, 127, 128, 163, 255, 256, 600])
@pytest.mark.parametrize("axis", [0, 1])
def test_the_face_crop_is_the_grown_box_resampled_whatever_its_size(side: int, axis: int) -> None:
    # a luma ramp along one axis: the square's pixels read the ramp where they sample it, so
    # a line fitted to them gives where each of the square's pixels lies in the frame
    h = w = 3 * side
    slope = 200.0 / (1.2 * side)  # luma levels a pixel: 20-220 across the grown box
    at = np.mgrid[0:h, 0:w][axis].astype(np.float64)
    lo = side - (GROW[1] if axis == 0 else GROW[0]) * side  # the grown box's first pixel
    luma = np.clip(np.rint(20.0 + slope * (at - lo)), 0, 255).astype(np.uint8)
    box = np.array([side, side, side, side], np.float64)
    got = face_crop(luma, box).astype(np.float64)
    assert got.shape == (REG_SIZE, REG_SIZE)
    line = got.mean(axis=1 - axis)[2:-2]  # (the border's samples clamp at the box's edge)
    j = np.arange(2, REG_SIZE - 2)
    per_px, first = np.polyfit(j, line, 1)
    residual = line - (first + per_px * j)
    # where the square's pixel j lies: the grown box's [a, b) cut in REG_SIZE, j's centre
    a = int(lo)
    b = int(side + (1 + (GROW[3] if axis == 0 else GROW[2])) * side)
    pixel = (b - a) / REG_SIZE
    assert per_px / slope == pytest.approx(pixel, rel=0.02)
    want_first = a + 0.5 * pixel - 0.5
    assert abs((first - 20.0) / slope + lo - want_first) < 0.5 * pixel
    assert np.max(np.abs(residual)) < 1.0


# a shift: the same means (linear interpolation and a box commute); a turn: within the
# interpolation's smoothing, a small part of the cells' own spread (largest, median error)
@pytest.mark.parametrize(
    ("deg", "dx", "dy", "largest", "median"),
    [
        (0.0, 0.0, 0.0, 1e-4, 1e-4),
        (0.0, 0.5, 0.0, 1e-4, 1e-4),
        (0.0, 1.3, -2.7, 1e-4, 1e-4),
        (2.0, 0.4, 0.2, 0.1, 0.02),
        (-5.0, 2.0, 1.0, 0.1, 0.02),
    ],
)
def test_the_registered_cells_are_the_means_of_the_square_seen_through_the_warp(
    deg: float, dx: float, dy: float, largest: float, median: float
) -> None:
    import cv2

    crop = np.asarray(
        cv2.resize(_textured(), (REG_SIZE, REG_SIZE), interpolation=cv2.INTER_AREA), np.float32
    )
    a = math.radians(deg)
    warp = np.array([[math.cos(a), -math.sin(a), dx], [math.sin(a), math.cos(a), dy], [0, 0, 1.0]])
    seen = cv2.warpAffine(
        crop,
        warp[:2].astype(np.float32),
        (REG_SIZE, REG_SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    want = seen.reshape(FACE_GRID, REG_SIZE // FACE_GRID, FACE_GRID, -1).mean(axis=(1, 3))
    got = _cells(crop, warp)
    # (a cell whose box the warp takes past the square's edge reads what each clamps there)
    cell = REG_SIZE // FACE_GRID
    centres = (np.arange(FACE_GRID) + 0.5) * cell - 0.5
    cx, cy = np.meshgrid(centres, centres)
    x = warp[0, 0] * cx + warp[0, 1] * cy + warp[0, 2]
    y = warp[1, 0] * cx + warp[1, 1] * cy + warp[1, 2]
    inside = (np.minimum(x, y) >= cell) & (np.maximum(x, y) <= REG_SIZE - 1 - cell)
    err = np.abs(got - want)[inside]
    assert inside.sum() > FACE_GRID * FACE_GRID // 2
    spread = float(np.std(want))
    assert np.max(err) < largest * spread, (np.max(err), spread)
    assert np.median(err) < median * spread, (np.median(err), spread)


def test_a_registration_that_loses_the_face_starts_again_and_is_counted() -> None:
    base = _textured()
    box = np.array([40.0, 30.0, 80.0, 80.0])
    reg = _Registration(segment=1)
    reg.grid(face_crop(base.astype(np.uint8), box))
    other = _textured(seed=9).astype(np.uint8)  # a cut: another picture altogether
    reg.grid(face_crop(other, box))
    reg.grid(face_crop(base.astype(np.uint8), box))
    assert reg.resets >= 1
    # and it aligns again from the unmoved box
    got = reg.grid(face_crop(_warped(base, 1.5, 1.0, 1.0), box))
    ref = _Registration(3).grid(face_crop(base.astype(np.uint8), box))
    assert np.median(np.abs(got.ravel()[INNER_UPPER] - ref.ravel()[INNER_UPPER])) < 1.5


def test_the_mouth_lies_below_the_registered_upper_face() -> None:
    assert np.intersect1d(MOUTH_CELLS, UPPER_CELLS).size == 0
    assert np.min(MOUTH_CELLS // FACE_GRID) > np.max(UPPER_CELLS // FACE_GRID)


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


def test_a_face_that_moves_far_from_its_box_is_found_where_it_went() -> None:
    # a known face is looked for only around its box: one that jumps elsewhere (a cut to
    # another framing) is missed there, the box dropped, and the whole frame searched again
    y = next(iter(ReferenceAvatar(renderer="photo").frames(1.0))).frame.y
    track = FaceTrack()
    assert track.update(0.0, y) is not None and track.box is not None
    first = track.box.copy()
    shift = y.shape[1] // 2 - int(first[0]) if first[0] < y.shape[1] / 4 else -int(first[0])
    moved = np.roll(y, shift, axis=1)
    t, found_at = 0.0, None
    limit = TRACK_EVERY_S + (LOST_AFTER + 2) * SEARCH_EVERY_S * 2
    while found_at is None and t < limit:
        t += 0.25
        track.update(t, moved)
        box = track.box
        if box is not None and abs(box[0] - (first[0] + shift)) < 0.2 * first[2]:
            found_at = t
    assert found_at is not None, (track.box, first, shift)
    assert abs(track.box[1] - first[1]) < 0.2 * first[3]  # type: ignore[index]


def _pose_and_speech(n: int = 400, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A head's pose (frames x 3) moving throughout, in speech and in its pauses, and which
    frames speak (1.6 s of speech, 0.8 s of pause, at 25 fps)."""
    rng = np.random.default_rng(seed)
    hp = Highpass(np.arange(n) / 25.0, 0.08)
    pose = np.asarray(hp @ np.cumsum(rng.standard_normal((n, 3)), axis=0))
    speaking = (np.arange(n) % 60) < 40
    return pose, speaking


def test_the_poses_fit_cleans_the_heads_leak_and_leaves_a_mouth_that_follows_the_pose() -> None:
    rng = np.random.default_rng(5)
    pose, speaking = _pose_and_speech()
    pauses = ~speaking
    cells = 12
    noise = 0.05 * rng.standard_normal((pose.shape[0], cells))
    # a frozen mouth on a nodding head: its cells hold the head's leak alone, in speech and in
    # pauses alike; cleaned, the noise is left
    leak = pose @ rng.standard_normal((3, cells))
    cleaned = without_pose(leak + noise, pose, 5, pauses)
    assert np.sum(cleaned**2) < 2 * np.sum(noise**2), (np.sum(cleaned**2), np.sum(noise**2))
    # a mouth that moves while the voice speaks, partly with the head (both follow the
    # speech), still in the pauses, and no leak: the fit over the quiet frames takes part of
    # its own motion (so it does unchecked) and puts the pose's into its pauses; checked on
    # them, the cells are left as they are
    own = np.where(speaking[:, None], pose[:, :1] * rng.standard_normal(cells), 0.0)
    own += np.where(speaking[:, None], 0.5 * rng.standard_normal((pose.shape[0], cells)), 0.0)
    x = own + noise
    unchecked = without_pose(x, pose, 5)
    assert np.sum(unchecked[speaking] ** 2) < 0.9 * np.sum(x[speaking] ** 2)
    assert np.sum(unchecked[pauses] ** 2) > 2 * np.sum(x[pauses] ** 2)
    assert np.array_equal(without_pose(x, pose, 5, pauses), x)
    # too few pauses to check on: the fit is kept
    few = np.zeros(pose.shape[0], bool)
    few[: POSE_CHECK_MIN - 1] = True
    assert np.array_equal(without_pose(x, pose, 5, few), unchecked)


@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.7, 0.93, 1.0])
def test_the_pose_fits_quantile_is_numpys_to_the_bit(q: float) -> None:
    """``_quantile`` stands in for ``np.quantile`` (linear) in the pose's fit: any difference
    would move which frames are fitted. Sizes from one value to a window's, ties included."""
    rng = np.random.default_rng(int(q * 100))
    for n in [*range(1, 40), 199, 200, 201]:
        for k in range(6):
            x = rng.standard_normal(n) ** 2 * 10.0 ** rng.uniform(-3, 3)
            if k % 2:
                x = np.round(x, 1)  # ties
            assert _quantile(x, q) == float(np.quantile(x, q)), (n, k)
    # a value that is not finite gives numpy's answer too (NaN; an infinity where it lies)
    assert np.isnan(_quantile(np.array([3.0, np.nan, 1.0, 2.0]), q))
    with np.errstate(invalid="ignore"):  # (numpy's lerp of an infinity: inf - inf)
        got = _quantile(np.array([3.0, np.inf, 1.0, 2.0]), q)
        want = float(np.quantile(np.array([3.0, np.inf, 1.0, 2.0]), q))
    assert got == want or (np.isnan(got) and np.isnan(want))
