"""Drives the real viewer (``viewer.html``: livekit-client in Debian's Chromium, headless) and
works out which A/V offset it played.

The reference avatar makes this exact without any lip reading: every picture carries its slot in a
burnt-in timecode, and the speech is a deterministic signal. So at the time ``D`` a picture is
shown, the picture shows speech time ``slot / fps - sent_offset``; the sound played at ``D`` is
found by aligning what the browser played with the source signal. Their difference is the
offset the viewer experiences (positive: the picture is late), in the same convention as
syncmon's ``content``.

Playwright drives the system Chromium through its executable path (its own browser download is
not reachable from CI). Chromium is told to use no network but what the page opens (the
loopback LiveKit server).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api

from syncmon.reference.avatar import Impairments, ReferenceAvatar
from syncmon.reference.face import TIMECODE_BITS
from syncmon.reference.localserver import LocalServer, free_port

HERE = Path(__file__).resolve().parent
PAGE = HERE / "viewer.html"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
    "--disable-features=MediaRouter,OptimizationHints,Translate",
    # file:// page loading its script from node_modules next to it
    "--allow-file-access-from-files",
    # a headless page counts as hidden: Chrome would lower its renderer's priority (nice +5)
    # and throttle its timers, and the page is what reads the sound the player pulls
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
]


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        p = shutil.which(name)
        if p:
            return p
    return None


def page_ready() -> str | None:
    """Why the browser viewer cannot run here, or None when it can."""
    if chromium_path() is None:
        return "no Chromium on PATH (scripts/setup.sh installs Debian's chromium)"
    if not (HERE / "node_modules" / "livekit-client" / "dist").is_dir():
        return "livekit-client not installed in tests/browser (scripts/setup.sh runs npm ci)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright (Python) not installed (pip install -e '.[test]')"
    return None


def viewer_token(api_key: str, api_secret: str, room: str, identity: str) -> str:
    """A plain subscriber, as an app's viewer joins (not hidden: the avatar sees a viewer)."""
    grants = api.VideoGrants(room_join=True, room=room, can_publish=False, can_subscribe=True)
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .with_ttl(datetime.timedelta(hours=1))
        .to_jwt()
    )


def timecode_probes(width: int, height: int) -> list[tuple[float, float]]:
    """Centres of the reference face's timecode blocks as fractions of the picture (the layout
    of ``FaceRenderer._timecode``), so that the page reads them at any decoded size."""
    b = max(4, width // 80)
    step = width // 16
    out = []
    for bit in range(TIMECODE_BITS):
        row = height - 2 * b if bit < 16 else b
        col = (bit % 16) * step + (step - b) // 2
        out.append(((col + b / 2) / width, (row + b / 2) / height))
    return out


def gray_decode(bits: list[int]) -> int:
    code = sum(int(v) << i for i, v in enumerate(bits))
    n = code
    shift = 1
    while (code >> shift) > 0:
        n ^= code >> shift
        shift += 1
    return n


@dataclass
class Recording:
    """What the viewer recorded, in performance.now() milliseconds."""

    video: list[tuple[float, int]] = field(default_factory=list)  # (display time, slot)
    audio_t: list[float] = field(default_factory=list)  # read time of each block
    audio_ts: list[float] = field(default_factory=list)  # AudioData.timestamp (ms)
    audio_n: list[int] = field(default_factory=list)
    pcm: list[np.ndarray] = field(default_factory=list)
    stats: list[tuple[float, str, dict[str, float]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sample_rate: int = 48000

    def add(self, chunk: dict[str, Any]) -> None:
        for t, _presented, bits, _rtp in chunk["video"]:
            self.video.append((float(t), gray_decode(bits)))
        for (t, ts, n, sr), b64 in zip(chunk["audio"], chunk["pcm"], strict=True):
            self.audio_t.append(float(t))
            self.audio_ts.append(float(ts) / 1000.0)
            self.audio_n.append(int(n))
            self.sample_rate = int(sr)
            self.pcm.append(
                np.frombuffer(base64.b64decode(b64), np.int16).astype(np.float32) / 32767
            )
        self.stats.extend((float(t), str(k), dict(v)) for t, k, v in chunk["stats"])
        self.errors.extend(chunk["errors"])


class BrowserViewer:
    """One headless Chromium page joined to a room as a viewer of ``identity``."""

    def __init__(self, page: Any, width: int, height: int) -> None:
        self.page = page
        self.width, self.height = width, height
        self.rec = Recording()

    def join(self, url: str, token: str, identity: str) -> None:
        probes = [list(p) for p in timecode_probes(self.width, self.height)]
        self.page.evaluate(
            "([u, t, i, p]) => window.join(u, t, i, p)", [url, token, identity, probes]
        )

    def collect(self) -> Recording:
        _raise_priority()  # Chrome starts its audio service when the sound starts playing
        self.rec.add(self.page.evaluate("() => window.take()"))
        return self.rec

    def subscribed(self) -> dict[str, bool]:
        return dict(self.page.evaluate("() => window.viewer.subscribed"))

    def now_ms(self) -> float:
        return float(self.page.evaluate("() => performance.now()"))


# Headless Chrome plays into a fake audio sink driven by an ordinary thread: on a host whose
# cores something else keeps busy it falls behind, and what it plays jumps by up to seconds
# (two busy loops on this 2-core host: 0 of 7 sessions with a steady stretch; 1 of 3 with
# the priority below, the publisher and server starving too there). The viewer is
# the yardstick here, not what is measured: where the host allows it, its processes run ahead of
# a busy neighbour, as a desktop's audio would.
BROWSER_NICE = -10


def _raise_priority() -> None:
    import psutil

    for p in psutil.Process().children(recursive=True):
        try:
            if p.name().startswith("chrom") and p.nice() > BROWSER_NICE:
                p.nice(BROWSER_NICE)
        except (psutil.Error, OSError):  # not allowed here (not root): runs as it is
            pass


@contextmanager
def browser_viewer(width: int = 640, height: int = 360) -> Iterator[BrowserViewer]:
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("no Chromium on PATH")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(PAGE.as_uri())
            page.wait_for_function("() => window.join !== undefined && window.LivekitClient")
            yield BrowserViewer(page, width, height)
        finally:
            browser.close()


ENV_BLOCK = 24  # samples (0.5 ms at 48 kHz): the envelope the played sound is aligned on
ALIGN_WINDOW_S = 2.0
ALIGN_MIN_CORR = 0.9  # below this a window's alignment is not trusted (silence, concealment)
# two neighbouring windows whose alignments differ by more than this (NetEq's stretching moves
# it by 10 ms at a time) straddle a jump of the player
ALIGN_JUMP_MS = 50.0
ALIGN_SEARCH_S = 0.1  # after the first window: how far the alignment may move per window


def _log_envelope(a: np.ndarray) -> np.ndarray:
    m = a.size // ENV_BLOCK * ENV_BLOCK
    e = np.sqrt(np.mean(a[:m].reshape(-1, ENV_BLOCK) ** 2, axis=1))
    return np.log(e + 1e-3)


def _best_match(src: np.ndarray, seg: np.ndarray, lo: int) -> tuple[int, float]:
    """Where ``seg`` sits in ``src`` (normalised cross-correlation of log envelopes)."""
    from scipy.signal import fftconvolve

    w = seg.size
    seg = seg - seg.mean()
    c = fftconvolve(src, seg[::-1], mode="valid")
    cs = np.cumsum(np.concatenate([[0.0], src]))
    cs2 = np.cumsum(np.concatenate([[0.0], src**2]))
    var = (cs2[w:] - cs2[:-w]) / w - ((cs[w:] - cs[:-w]) / w) ** 2
    nc = c / (np.sqrt(np.maximum(var, 1e-12) * w) * (np.linalg.norm(seg) + 1e-12))
    j = int(np.argmax(nc))
    return lo + j, float(nc[j])


class NotFollowed(ValueError):
    """Nothing the viewer played matched the source (a player starved throughout)."""


@dataclass
class Played:
    """What the viewer played: ``t_ms`` the display time of each picture (performance.now()),
    ``offset_ms`` the A/V offset at that instant (positive: the picture is late), ``valid``
    whether the sound playing then lay in a window that matched the source (elsewhere the
    offset is interpolated across a stretch the alignment could not follow)."""

    t_ms: np.ndarray
    offset_ms: np.ndarray
    valid: np.ndarray
    aligned_windows: int
    windows: int

    def between(self, t0_ms: float, t1_ms: float) -> np.ndarray:
        sel = (self.t_ms >= t0_ms) & (self.t_ms < t1_ms) & self.valid
        return self.offset_ms[sel]

    def followed(self, t0_ms: float, t1_ms: float) -> float:
        """The share of pictures shown in ``t0_ms``-``t1_ms`` whose sound was followed (nan
        when none was shown)."""
        v = self.valid[(self.t_ms >= t0_ms) & (self.t_ms < t1_ms)]
        return float(np.mean(v)) if v.size else float("nan")


def _block_lags(
    first: np.ndarray, index: np.ndarray, lags: np.ndarray, failed: list[int], w: int, sr: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each block's lag (samples) from the aligned windows (``index``: each one's number,
    windows ``w`` envelope blocks long, half overlapping), and whether it is followed.

    Between the centres of two neighbouring aligned windows the lag is interpolated (NetEq's
    stretching moves it slowly); elsewhere a block takes the lag of the aligned window holding
    it. A player that jumps (a starved fake sink flushing a second of sound) does so inside a
    window that then matches nothing, or matches the larger of its two parts: no block inside
    a window that matched nothing is followed, nor any in the overlap of two neighbours whose
    alignments differ by a jump."""
    span = w * ENV_BLOCK
    starts = (index - 1) * (w // 2) * ENV_BLOCK
    centres = starts + span / 2
    k = np.searchsorted(centres, first)  # centres[k-1] <= first < centres[k]
    lo, hi = np.clip(k - 1, 0, len(lags) - 1), np.clip(k, 0, len(lags) - 1)
    in_lo = (first >= starts[lo]) & (first < starts[lo] + span)
    in_hi = (first >= starts[hi]) & (first < starts[hi] + span)
    pair = (k > 0) & (k < len(lags)) & (index[hi] - index[lo] == 1)
    frac = np.clip((first - centres[lo]) / np.maximum(centres[hi] - centres[lo], 1), 0, 1)
    lag = np.where(
        pair,
        lags[lo] + frac * (lags[hi] - lags[lo]),
        np.where(in_lo | ~in_hi, lags[lo], lags[hi]),
    )
    ok = pair | in_lo | in_hi
    for f in failed:
        s0 = (f - 1) * (w // 2) * ENV_BLOCK
        ok &= (first < s0) | (first >= s0 + span)
    jumps = (np.diff(index) == 1) & (np.abs(np.diff(lags)) > ALIGN_JUMP_MS * sr / 1e3)
    for m in np.flatnonzero(jumps):
        ok &= (first < starts[m + 1]) | (first >= starts[m] + span)
    return lag, ok


def played_offsets(rec: Recording, source: np.ndarray, *, fps: float, sent_ms: float) -> Played:
    """The offset the viewer played, from the timecode of each shown picture and the position
    in ``source`` (the avatar's audio from its sample 0) of the sound played at that time.

    The played sound is aligned with the source on 0.5 ms log envelopes over 2 s windows (Opus
    keeps the envelope, not the waveform of this noise-excited speech); NetEq's stretching moves
    the alignment slowly, which the windows follow. A window that does not match well (silence,
    concealment) takes its neighbours' alignment, and its pictures are not ``valid``; after
    one, the next window is sought over the whole source: a starved player (a loaded host's
    fake audio sink) jumps by a second or more, which no narrow search follows.
    """
    if not rec.pcm or not rec.video:
        raise ValueError("the viewer recorded no sound or no pictures")
    sr = rec.sample_rate
    x = np.concatenate(rec.pcm)
    ex, es = _log_envelope(x), _log_envelope(source)
    w = int(ALIGN_WINDOW_S * sr / ENV_BLOCK)
    search = int(ALIGN_SEARCH_S * sr / ENV_BLOCK)
    index: list[int] = []  # 1-based number of each aligned window
    failed: list[int] = []  # and of each that matched nothing
    lags: list[int] = []
    prev: int | None = None
    windows = 0
    for w0 in range(0, ex.size - w, w // 2):
        windows += 1
        seg = ex[w0 : w0 + w]
        lo, hi = (
            (0, es.size) if prev is None else (max(0, w0 + prev - search), w0 + prev + search + w)
        )
        if hi - lo < w or np.ptp(seg) < 1.0:
            continue
        j, corr = _best_match(es[lo:hi], seg, lo)
        if corr < ALIGN_MIN_CORR:
            failed.append(windows)
            prev = None
            continue
        prev = j - w0
        index.append(windows)
        lags.append(prev * ENV_BLOCK)
    if not lags:
        raise NotFollowed("the sound the viewer played never matched the avatar's source")
    n = np.asarray(rec.audio_n)
    first = np.concatenate([[0], np.cumsum(n)[:-1]])
    lag, block_ok = _block_lags(
        first, np.asarray(index), np.asarray(lags, dtype=float), failed, w, sr
    )
    src_ms = (first + lag) / sr * 1e3
    ts = np.asarray(rec.audio_ts)
    v = np.asarray(rec.video, dtype=float)
    inside = (v[:, 0] >= ts[0]) & (v[:, 0] <= ts[-1])
    v = v[inside]
    shown_ms = v[:, 1] / fps * 1e3 - sent_ms
    heard_ms = np.interp(v[:, 0], ts, src_ms)
    playing = np.clip(np.searchsorted(ts, v[:, 0], side="right") - 1, 0, ts.size - 1)
    return Played(v[:, 0], heard_ms - shown_ms, block_ok[playing], len(lags), windows)


def _per_second(
    stats: list[tuple[float, str, dict[str, float]]], kind: str, num: str, den: str
) -> tuple[np.ndarray, np.ndarray]:
    rows = [(t, s[num], s[den]) for t, k, s in stats if k == kind and num in s and den in s]
    if len(rows) < 2:
        return np.zeros(0), np.zeros(0)
    a = np.asarray(rows, dtype=float)
    dn, dd = np.diff(a[:, 1]), np.diff(a[:, 2])
    ok = dd > 0
    return a[1:, 0][ok], 1e3 * dn[ok] / dd[ok]


@dataclass
class BrowserDelays:
    """The browser's own delays, per second (ms): NetEq's jitter buffer and the audio playout
    path (audio), and the video jitter buffer."""

    t_ms: np.ndarray
    audio_ms: np.ndarray
    video_ms: np.ndarray

    def audio_range(self, t0_ms: float, t1_ms: float) -> float:
        a = self.audio_ms[(self.t_ms >= t0_ms) & (self.t_ms < t1_ms)]
        return float(np.ptp(a)) if a.size else float("nan")


def browser_delays(rec: Recording) -> BrowserDelays:
    ta, jb = _per_second(rec.stats, "audio", "jitterBufferDelay", "jitterBufferEmittedCount")
    tp, po = _per_second(
        rec.stats, "audio", "playout.totalPlayoutDelay", "playout.totalSamplesCount"
    )
    tv, vj = _per_second(rec.stats, "video", "jitterBufferDelay", "jitterBufferEmittedCount")
    # totalPlayoutDelay is in seconds summed per sample: the mean playout delay per second
    t = ta
    audio = jb + (np.interp(ta, tp, po) if tp.size else 0.0)
    video = np.interp(ta, tv, vj) if tv.size else np.full(ta.shape, np.nan)
    return BrowserDelays(t, audio, video)


# -- a side-by-side session: the reference avatar, syncmon watch, and this viewer -------------
FPS = 25.0
UNSTABLE_MS = 15.0  # a session whose browser audio delay moved more than this is not compared
CONVERGED_MS = 5.0
COMPARE_S = 20.0  # with sync_streams: compared over this long once the browser converged
SYNC_ENGAGED_MS = 10.0


MIN_STEADY_S = 10.0  # the shortest stretch a session is compared over
FOLLOWED_MIN = 0.8  # a second counts in a steady stretch when this share of its sound was followed
# a default-server session with no steady stretch by its end runs on this much longer: a
# loaded host's disturbance passes more often than not within it, and a new session would
# first spend its own settling time
EXTEND_S = 30.0


def steady_window(
    delays: BrowserDelays,
    t_start: float,
    settle: float,
    seconds: float,
    played: Played | None = None,
) -> tuple[float, float]:
    """The longest stretch from ``settle`` to ``seconds`` (s after ``t_start``) over which the
    browser's own audio delay held within UNSTABLE_MS and (with ``played``) the sound it played
    was followed in every second, if at least MIN_STEADY_S long; else the whole of it (and the
    session is unstable). Under load headless Chrome's fake audio sink falls behind now and
    then and NetEq's delay steps: before and after the step, what it plays is comparable;
    across it, not."""
    sel = (delays.t_ms >= t_start + settle * 1e3) & (delays.t_ms < t_start + seconds * 1e3)
    t, a = delays.t_ms[sel], delays.audio_ms[sel]
    if t.size == 0:
        return settle, seconds
    ok = np.ones(t.size, dtype=bool)
    if played is not None:
        # per-second samples: each stands for the second after it
        ok = np.array([played.followed(ti, ti + 1e3) >= FOLLOWED_MIN for ti in t])
    best: tuple[int, int] | None = None
    lo = 0
    for hi in range(t.size):
        if not ok[hi]:
            lo = hi + 1
            continue
        while np.ptp(a[lo : hi + 1]) > UNSTABLE_MS:
            lo += 1
        if best is None or t[hi] - t[lo] > t[best[1]] - t[best[0]]:
            best = (lo, hi)
    if best is None or (t[best[1]] - t[best[0]]) / 1e3 + 1.0 < MIN_STEADY_S:
        return settle, seconds
    # per-second samples: the stretch covers the second after its last sample too
    return (t[best[0]] - t_start) / 1e3, min(seconds, (t[best[1]] - t_start) / 1e3 + 1.0)


class NotConverged(AssertionError):
    """The browser's lip-sync did not settle within the time given."""


def monitor_report(url: str, room: str, identity: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/report", timeout=5) as r:
            rep = json.load(r)
    except OSError:
        return None
    entry = rep.get("rooms", {}).get(room, {}).get("avatars", {}).get(identity)
    return entry if isinstance(entry, dict) else None


@dataclass
class Session:
    """One side-by-side run. ``rows``: per ``step`` (t s, browser played, syncmon content,
    syncmon as received, syncmon receiver bias, browser audio delay, browser video delay), ms;
    ``diff_ms``: median content - median browser after the settling time; ``stream_diff_ms``:
    the same with each receiver's own A/V buffering taken out (``stream_level``)."""

    sent_ms: float
    rows: list[tuple[float, ...]]
    browser_ms: float
    content_ms: float
    audio_range_ms: float
    converged_s: float  # the end of the last step that was off by > 5 ms from where it settled
    engaged_s: float  # with wait_sync: when the browser's sync first delayed the pictures
    played: Played
    stream_diff_ms: float = float("nan")

    @property
    def diff_ms(self) -> float:
        return self.content_ms - self.browser_ms

    followed: float = float("nan")  # the share of the compared pictures whose sound was followed
    ran_s: float = float("nan")  # how long the session ran (more than asked when it was unsteady)

    @property
    def stable(self) -> bool:
        return self.audio_range_ms <= UNSTABLE_MS and self.followed >= FOLLOWED_MIN


def source_audio(sent_ms: float, seconds: float) -> np.ndarray:
    """The reference avatar's sound from its first sample, as the publisher makes it."""
    av = ReferenceAvatar(fps=FPS, impairments=Impairments(offset_ms=sent_ms))
    return av.audio(0, int(seconds * av.sample_rate))


def _median(a: np.ndarray) -> float:
    return float(np.median(a)) if a.size else float("nan")


def _rows(
    played: Played, delays: BrowserDelays, c: np.ndarray, t_start: float, n: int, step: float
) -> list[tuple[float, ...]]:
    rows: list[tuple[float, ...]] = []
    for k in range(1, n + 1):
        t0, t1 = t_start + (k - 1) * step * 1e3, t_start + k * step * 1e3
        cm = c[(c[:, 0] >= t0) & (c[:, 0] < t1)]
        dm = (delays.t_ms >= t0) & (delays.t_ms < t1)
        rows.append(
            (
                k * step,
                _median(played.between(t0, t1)),
                _median(cm[:, 1]),
                _median(cm[:, 2]),
                _median(cm[:, 3]),
                _median(delays.audio_ms[dm]),
                _median(delays.video_ms[dm]),
            )
        )
    return rows


def stream_level(rows: list[tuple[float, ...]], t0_s: float, t1_s: float, step: float) -> float:
    """Median over the ``rows`` (``step`` s each) centred within ``t0_s``-``t1_s`` of what
    syncmon read less its own receiver's A/V buffering (content - bias, bias = video - audio
    delay) against what the browser played less its own (played - (video - audio delay)).

    Two receivers of one stream play it with their own jitter buffers, and those move
    independently: in one CI run the browser's NetEq shed 30 ms of audio delay mid-session
    (played +85 -> +113 ms for +120 sent) while the monitor's held (content +83). What a
    viewer plays then differs by that much between two viewers; what the stream carries does
    not. The difference holds a constant of the two definitions (the browser's delay includes
    its audio playout path: -25...-37 ms over 8 sessions) and what the estimator itself gets
    wrong."""
    vals = [(r[2] - r[4]) - (r[1] - (r[6] - r[5])) for r in rows if t0_s <= r[0] - step / 2 <= t1_s]
    finite = [v for v in vals if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def _synced_window(rows: list[tuple[float, ...]], step: float) -> tuple[float, float] | None:
    """(engaged, window start) once the browser's A/V sync has engaged and its played offset has
    since held within CONVERGED_MS for COMPARE_S; None till then. Engaged: its video buffer grew
    by SYNC_ENGAGED_MS over where it began (on loopback NetEq holds the sound 50-60 ms longer
    than the video buffer holds pictures, so lip-syncing the pair delays the pictures), or its
    played offset moved by as much from where it began."""
    n = int(COMPARE_S / step)
    video = [(r[0], r[6]) for r in rows if np.isfinite(r[6])]
    played = [(r[0], r[1]) for r in rows if np.isfinite(r[1])]
    if len(rows) < n + 2 or len(video) < 2 or len(played) < 2:
        return None
    v0 = float(np.median([v for _, v in video[:2]]))
    p0 = float(np.median([v for _, v in played[:2]]))
    grew = (t for t, v in video[2:] if v >= v0 + SYNC_ENGAGED_MS)
    moved = (t for t, v in played[2:] if abs(v - p0) >= SYNC_ENGAGED_MS)
    engaged = min(next(grew, np.inf), next(moved, np.inf))
    if not np.isfinite(engaged) or rows[-1][0] - engaged < COMPARE_S:
        return None
    last = np.asarray([r[1] for r in rows[-n:]])
    if not np.all(np.isfinite(last)) or np.ptp(last) > 2 * CONVERGED_MS:
        return None
    return float(engaged), rows[-1][0] - COMPARE_S


def _steady(
    rec: Recording, src: np.ndarray, t_start: float, settle: float, seconds: float, sent_ms: float
) -> bool:
    """Whether the session so far holds a stretch it can be compared over."""
    try:
        played = played_offsets(rec, src, fps=FPS, sent_ms=sent_ms)
    except NotFollowed:  # nothing played matched yet
        return False
    delays = browser_delays(rec)
    w0, w1 = steady_window(delays, t_start, settle, seconds, played)
    t0, t1 = t_start + w0 * 1e3, t_start + w1 * 1e3
    return delays.audio_range(t0, t1) <= UNSTABLE_MS and played.followed(t0, t1) >= FOLLOWED_MIN


def compare_session(
    srv: LocalServer,
    viewer: BrowserViewer,
    room: str,
    *,
    sent_ms: float,
    seconds: float,
    settle: float = 20.0,
    wait_sync: bool = False,
    step: float = 5.0,
    extend: float = EXTEND_S,
) -> Session:
    """Publishes the reference avatar at ``sent_ms`` into ``room`` with a ``syncmon watch`` on
    it and ``viewer`` subscribed, and compares what each says.

    By default it runs ``seconds`` and compares from ``settle`` on. With ``wait_sync`` (a
    ``room.sync_streams`` server, where the browser lip-syncs the pair and takes 30-100 s to
    converge) it runs until the browser's sync has engaged and its played offset has held for
    COMPARE_S, and compares over those; ``seconds`` is then the most it waits (NotConverged).
    Otherwise a session whose browser held no steady stretch (``steady_window``) by
    ``seconds`` runs on until one is found or ``extend`` s more have passed.
    """
    most = seconds if wait_sync else seconds + extend
    env = {
        **os.environ,
        "LIVEKIT_URL": srv.url,
        "LIVEKIT_API_KEY": srv.api_key,
        "LIVEKIT_API_SECRET": srv.api_secret,
    }
    port = free_port()
    murl = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "syncmon.cli"]
    args = [
        ["watch", "--room", room, "--metrics-addr", f"127.0.0.1:{port}"],
        ["reference", "publish", "--room", room, "--identity", "avatar"]
        + ["--offset-ms", str(sent_ms), "--fps", str(FPS), "--duration", str(most + 10)],
    ]
    procs = [
        subprocess.Popen([*cli, *a], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for a in args
    ]
    content: list[tuple[float, float, float, float]] = []
    src = source_audio(sent_ms, most + 15)
    window: tuple[float, float] | None = None
    engaged = 0.0
    try:
        viewer.join(srv.url, viewer_token(srv.api_key, srv.api_secret, room, "viewer"), "avatar")
        t_start = viewer.now_ms()
        next_check = step
        end = seconds
        while (elapsed := (viewer.now_ms() - t_start) / 1e3) < most:
            if not wait_sync and elapsed >= end:
                if _steady(viewer.collect(), src, t_start, settle, end, sent_ms):
                    break
                end += step
            time.sleep(0.5)
            a = monitor_report(murl, room, "avatar")
            c = (a or {}).get("offset_ms", {}).get("content")
            if a is not None and c is not None:
                content.append(
                    (
                        viewer.now_ms(),
                        float(c),
                        float(a.get("received_content_ms") or np.nan),
                        float(a.get("receiver_bias_ms") or np.nan),
                    )
                )
            rec = viewer.collect()
            if wait_sync and elapsed >= next_check:
                next_check += step
                n = int(elapsed / step)
                cs = np.asarray(content) if content else np.zeros((0, 4))
                found = _synced_window(
                    _rows(
                        played_offsets(rec, src, fps=FPS, sent_ms=sent_ms),
                        browser_delays(rec),
                        cs,
                        t_start,
                        n,
                        step,
                    ),
                    step,
                )
                if found is not None:
                    engaged, w0 = found
                    window = (w0, n * step)
                    break
        rec = viewer.collect()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
    if rec.errors:
        raise RuntimeError(f"the browser viewer failed: {rec.errors[:3]}")
    if wait_sync and window is None:
        seen = _rows(
            played_offsets(rec, src, fps=FPS, sent_ms=sent_ms),
            browser_delays(rec),
            np.asarray(content) if content else np.zeros((0, 4)),
            t_start,
            int(seconds / step),
            step,
        )
        trace = ", ".join(f"{r[0]:.0f}s {r[1]:+.0f}/{r[6]:.0f}" for r in seen)
        raise NotConverged(
            f"the browser's lip-sync did not converge within {seconds:.0f} s "
            f"(played offset/video buffer ms: {trace})"
        )
    played = played_offsets(rec, src, fps=FPS, sent_ms=sent_ms)
    delays = browser_delays(rec)
    c = np.asarray(content) if content else np.zeros((0, 4))
    ran = min(end, most)
    w0, w1 = window if window is not None else steady_window(delays, t_start, settle, ran, played)
    rows = _rows(played, delays, c, t_start, int(w1 / step), step)
    t0, t1 = t_start + w0 * 1e3, t_start + w1 * 1e3
    browser_ms = _median(played.between(t0, t1))
    # the end of the last step that was off by more than CONVERGED_MS from where it settled
    converged = max(
        (r[0] for r in rows if not np.isfinite(r[1]) or abs(r[1] - browser_ms) > CONVERGED_MS),
        default=0.0,
    )
    return Session(
        sent_ms=sent_ms,
        rows=rows,
        browser_ms=browser_ms,
        content_ms=_median(c[(c[:, 0] >= t0) & (c[:, 0] < t1), 1]),
        audio_range_ms=delays.audio_range(t0, t1),
        converged_s=converged,
        engaged_s=engaged,
        played=played,
        stream_diff_ms=stream_level(rows, w0, w1, step),
        followed=played.followed(t0, t1),
        ran_s=ran,
    )
