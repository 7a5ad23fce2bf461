"""The browser viewer's arithmetic (tests/browser/driver.py) against a known truth, without a
browser: the timecode it reads off a picture, and the played offset it works out from shown
pictures and pulled sound."""

from __future__ import annotations

import numpy as np
import pytest

from syncmon.reference.face import FaceRenderer
from tests.browser.driver import (
    FPS,
    BrowserDelays,
    Recording,
    gray_decode,
    played_offsets,
    source_audio,
    steady_window,
    stream_level,
    timecode_probes,
)


@pytest.mark.parametrize(("w", "h"), [(640, 360), (1280, 720), (320, 240)])
def test_timecode_read_at_the_probes_is_the_slot(w: int, h: int) -> None:
    face = FaceRenderer(width=w, height=h, seed=3)
    for slot in (0, 1, 2, 3, 1000, 123_457, 2**24 - 1):
        y = face.render(mouth_open=0.3, scene_t=slot / FPS, slot=slot).y
        bits = [int(y[int(fy * h), int(fx * w)] > 125) for fx, fy in timecode_probes(w, h)]
        assert gray_decode(bits) == slot


def browser_like(
    played_ms: float,
    sent_ms: float,
    *,
    lag_s: float,
    seconds: float,
    stretch_at_s: float,
    skip_s: float = 0.01,
) -> tuple[Recording, np.ndarray]:
    """What a browser would record if it played the avatar at ``played_ms``: its player pulls
    10 ms blocks of the source from ``lag_s`` on (with noise, and ``skip_s`` of the sound
    skipped at ``stretch_at_s``: 10 ms as NetEq's acceleration does, a second or more as a
    starved player flushes), and shows each picture when the sound playing is ``played_ms``
    ahead of the speech the picture shows."""
    sr = 48000
    src = source_audio(sent_ms, lag_s + seconds + skip_s + 5)
    rng = np.random.default_rng(5)
    rec = Recording(sample_rate=sr)
    t0 = 1000.0
    pos = int(lag_s * sr)  # source sample the player is at
    heard: list[tuple[float, float]] = []  # (time ms, source ms) at each block's start
    for i in range(int(seconds * 100)):
        t = t0 + 10.0 * i
        if abs(t - t0 - stretch_at_s * 1e3) < 5:
            pos += int(skip_s * sr)  # sound removed: everything after plays that much earlier
        block = src[pos : pos + 480] + rng.normal(0, 0.002, 480).astype(np.float32)
        heard.append((t, pos / sr * 1e3))
        rec.audio_t.append(t + float(rng.uniform(0, 3)))
        rec.audio_ts.append(t)
        rec.audio_n.append(480)
        rec.pcm.append(block.astype(np.float32))
        pos += 480
    ht = np.array(heard)
    for slot in range(int((lag_s + 1) * FPS), int((lag_s + seconds - 1) * FPS)):
        shown_ms = slot / FPS * 1e3 - sent_ms
        # the time at which the sound playing is shown_ms + played_ms
        d = float(np.interp(shown_ms + played_ms, ht[:, 1], ht[:, 0]))
        rec.video.append((d, slot))
    return rec, src


@pytest.mark.parametrize(("played", "sent"), [(-17.0, 0.0), (103.5, 120.0), (40.0, 0.0)])
def test_played_offset_is_the_truth(played: float, sent: float) -> None:
    rec, src = browser_like(played, sent, lag_s=3.21, seconds=20, stretch_at_s=11.0)
    p = played_offsets(rec, src, fps=FPS, sent_ms=sent)
    assert p.aligned_windows >= 0.8 * p.windows
    assert p.followed(1000.0, 21_000.0) >= 0.9
    # away from the skipped 10 ms (the windows around it see both alignments)
    calm = np.abs(p.t_ms - 1000.0 - 11_000.0) > 2500
    err = p.offset_ms[calm] - played
    assert np.percentile(np.abs(err), 95) <= 1.0, np.percentile(err, [0, 50, 100])


@pytest.mark.parametrize("skip_s", [0.7, 1.5])
def test_a_player_that_jumps_is_followed_on_both_sides(skip_s: float) -> None:
    # a starved player (a loaded host's fake audio sink) jumps by a second or more at once
    rec, src = browser_like(103.5, 120.0, lag_s=2.0, seconds=24, stretch_at_s=11.37, skip_s=skip_s)
    p = played_offsets(rec, src, fps=FPS, sent_ms=120.0)
    jump = 1000.0 + 11_370.0
    for t0, t1 in ((1000.0 + 1500, jump - 2000), (jump + 2000, 1000.0 + 23_000)):
        assert p.followed(t0, t1) == 1.0
        err = p.between(t0, t1) - 103.5
        assert np.percentile(np.abs(err), 95) <= 1.0, (t0, np.percentile(err, [0, 50, 100]))
    # a window across the jump matched nothing (the other may match its larger part): no
    # picture of the second around it is taken as followed, nor any off by the jump
    assert p.aligned_windows < p.windows
    assert p.followed(1000.0 + 11_050, 1000.0 + 11_950) == 0.0
    bad = np.abs(p.offset_ms[p.valid] - 103.5) > 5.0
    assert not bad.any(), p.t_ms[p.valid][bad] - jump


def test_no_sound_or_no_pictures_is_an_error() -> None:
    rec, src = browser_like(0.0, 0.0, lag_s=1.0, seconds=5, stretch_at_s=99)
    rec.video.clear()
    with pytest.raises(ValueError, match="no sound or no pictures"):
        played_offsets(rec, src, fps=FPS, sent_ms=0.0)


def test_sound_from_elsewhere_is_an_error() -> None:
    rec, src = browser_like(0.0, 0.0, lag_s=1.0, seconds=8, stretch_at_s=99)
    other = np.random.default_rng(1).normal(0, 0.1, src.size).astype(np.float32)
    with pytest.raises(ValueError, match="never matched"):
        played_offsets(rec, other, fps=FPS, sent_ms=0.0)


def test_a_session_is_compared_over_its_longest_steady_stretch() -> None:
    # per-second audio delays from 20 to 40 s: steady at 60 ms, a 40 ms step at 27 s (the
    # fake sink fell behind), steady again: the stretch after the step is the longer one
    t_start = 1000.0
    t = t_start + np.arange(20, 40) * 1e3
    audio = np.where(t < t_start + 27e3, 60.0, 100.0) + np.tile([0.0, 3.0], 10)
    d = BrowserDelays(t, audio, np.zeros_like(t))
    assert steady_window(d, t_start, 20.0, 40.0) == (27.0, 40.0)
    # steady throughout: all of it
    flat = BrowserDelays(t, np.full(t.shape, 60.0), np.zeros_like(t))
    assert steady_window(flat, t_start, 20.0, 40.0) == (20.0, 40.0)
    # no stretch of 10 s: all of it, to be found unstable
    jumpy = BrowserDelays(t, np.arange(20, dtype=float) * 10.0, np.zeros_like(t))
    w = steady_window(jumpy, t_start, 20.0, 40.0)
    assert w == (20.0, 40.0) and jumpy.audio_range(t_start + 20e3, t_start + 40e3) > 15.0
    # steady delays, but the played sound not followed from 33 s on (a stretch the harness
    # could not align): only 20-33 s counts; not followed after 27 s as well: no stretch of 10 s
    rec, src = browser_like(0.0, 0.0, lag_s=1.0, seconds=45, stretch_at_s=99)
    p = played_offsets(rec, src, fps=FPS, sent_ms=0.0)
    assert p.followed(t_start + 20e3, t_start + 40e3) == 1.0
    p.valid[p.t_ms >= t_start + 33e3] = False
    assert steady_window(flat, t_start, 20.0, 40.0, p) == (20.0, 33.0)
    p.valid[p.t_ms >= t_start + 27e3] = False
    assert steady_window(flat, t_start, 20.0, 40.0, p) == (20.0, 40.0)


def test_stream_level_takes_each_receivers_own_buffers_out() -> None:
    # the stream carries +100 ms; the definitions differ by a constant -30 ms. The monitor's
    # receiver holds its audio 26 ms longer than its video, then 9 ms less from 25 s on; the
    # browser's audio delay sheds 30 ms at 30 s: what each plays moves with its own buffers
    rows = []
    for t in np.arange(5.0, 45.0, 5.0):
        bias = -26.0 if t <= 25 else -17.0  # the monitor's video - audio delay
        b_audio, b_video = (90.0 if t <= 30 else 60.0), 8.0
        content = 100.0 + bias - 30.0
        browser = 100.0 + (b_video - b_audio)
        rows.append((float(t), browser, content, content, bias, b_audio, b_video))
    raw = [r[2] - r[1] for r in rows]
    assert max(raw) - min(raw) == pytest.approx(30.0)
    # rows centred in 20-40 s: 25...40; each reads the constant alone
    assert stream_level(rows, 20.0, 40.0, 5.0) == pytest.approx(-30.0)
    # content 12 ms off in one row of the four leaves the median; in two, it moves by half
    rows[5] = (*rows[5][:2], rows[5][2] + 12.0, *rows[5][3:])
    assert stream_level(rows, 20.0, 40.0, 5.0) == pytest.approx(-30.0)
    rows[6] = (*rows[6][:2], rows[6][2] + 12.0, *rows[6][3:])
    assert stream_level(rows, 20.0, 40.0, 5.0) == pytest.approx(-24.0)
    # no row inside the stretch: nan, to fail the comparison
    assert np.isnan(stream_level(rows, 60.0, 80.0, 5.0))
