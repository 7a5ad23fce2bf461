"""``content`` against what a real browser viewer plays (issue 14), through the real
livekit-server, on either server configuration.

Each session: the reference avatar at a sender offset, a ``syncmon watch`` on its room, and the
real viewer (livekit-client 2.23 in Debian's Chromium, headless; tests/browser/) subscribed to
the same avatar. Every ``--step`` seconds it prints what the browser played (from the timecode
of the pictures it showed and the sound its player pulled; see tests/browser/driver.py), what
syncmon reported as ``content`` (and as received), the browser's own audio and video delays
(getStats), and the difference. At the end, per session: the median of syncmon - browser after
``--settle`` seconds (with ``--sync``: over the 20 s after the browser's own lip-sync has
engaged and held, ``--seconds`` being the most it waits), the range of the browser's own audio
delay over that time (a session where it moved by more than 15 ms is counted unstable:
headless Chrome's fake audio sink falls behind under load), and when the browser's played
offset had converged (from then on within 5 ms of where it settled).

    python benchmarks/bench_browser.py                              # default server, 0 and +120 ms
    python benchmarks/bench_browser.py --sync --seconds 180         # room.sync_streams: true
    python benchmarks/bench_browser.py --offsets 120 --sessions 4   # repeatability
    python benchmarks/bench_browser.py --load core                  # a busy loop on one core

Needs scripts/setup.sh (Chromium, livekit-client, Playwright).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncmon.reference.localserver import LocalServer  # noqa: E402
from tests.browser.driver import (  # noqa: E402
    Session,
    browser_viewer,
    compare_session,
    page_ready,
)


def show(s: Session, sync: bool, settle: float) -> None:
    p = s.played
    print(
        f"\n{'sync_streams' if sync else 'default'} server, sent {s.sent_ms:+.0f} ms "
        f"(sound aligned in {p.aligned_windows}/{p.windows} windows)"
    )
    print("   t s  browser  content  received  s.bias  b.audio  b.video  content-browser")
    for r in s.rows:
        print(
            f"{r[0]:6.0f} {r[1]:8.1f} {r[2]:8.1f} {r[3]:9.1f} {r[4]:7.1f} {r[5]:8.1f} "
            f"{r[6]:8.1f} {r[2] - r[1]:9.1f}"
        )
    print(
        f"{'synced' if sync else f'after {settle:.0f} s'}: browser {s.browser_ms:+.1f}, "
        f"content {s.content_ms:+.1f}, "
        f"content - browser {s.diff_ms:+.1f} ms ({s.stream_diff_ms:+.1f} ms less both "
        f"receivers' A/V buffering, see driver.stream_level); browser audio delay moved "
        f"{s.audio_range_ms:.1f} ms ({'stable' if s.stable else 'UNSTABLE'}); browser "
        f"within 5 ms of its final offset from {s.converged_s:.0f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sync", action="store_true", help="room.sync_streams: true")
    ap.add_argument("--offsets", default="0,120", help="sender offsets, ms (comma-separated)")
    ap.add_argument("--sessions", type=int, default=1, help="sessions per offset")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds before comparing (default: 20; not with --sync)",
    )
    ap.add_argument("--step", type=float, default=5.0)
    ap.add_argument("--load", choices=("none", "core"), default="none")
    args = ap.parse_args()
    why = page_ready()
    if why:
        sys.exit(f"bench_browser: {why}")
    settle = args.settle if args.settle is not None else 20.0
    if settle >= args.seconds and not args.sync:
        sys.exit(
            f"bench_browser: --settle {settle:.0f} s leaves nothing of --seconds {args.seconds:.0f}"
        )
    load = None
    if args.load == "core":
        load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    out: list[Session] = []
    try:
        with LocalServer.start(build=False, sync_streams=args.sync) as srv:
            for i in range(args.sessions):
                for off in (float(x) for x in args.offsets.split(",")):
                    with browser_viewer() as v:
                        s = compare_session(
                            srv,
                            v,
                            f"browser-{i}-{off:+.0f}",
                            sent_ms=off,
                            seconds=args.seconds,
                            settle=settle,
                            wait_sync=args.sync,
                            step=args.step,
                        )
                    show(s, args.sync, settle)
                    out.append(s)
    finally:
        if load is not None:
            load.kill()
    print("\nsummary:  sent  browser  content  content-browser  browser audio moved  converged")
    for s in out:
        print(
            f"  {s.sent_ms:+6.0f} {s.browser_ms:+8.1f} {s.content_ms:+8.1f} {s.diff_ms:+12.1f} ms "
            f"{s.audio_range_ms:12.1f} ms {'' if s.stable else '(unstable)':10s} "
            f"{s.converged_s:5.0f} s"
        )
    st = [abs(s.diff_ms) for s in out if s.stable]
    print(
        f"stable sessions {len(st)}/{len(out)}; "
        f"|content - browser| max {max(st, default=float('nan')):.1f} ms"
    )


if __name__ == "__main__":
    main()
