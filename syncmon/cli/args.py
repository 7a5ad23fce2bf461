"""What the commands share: argument types, the LiveKit connection flags and credentials,
the monitor flags."""

from __future__ import annotations

import argparse
import os
from typing import Any, TypeAlias


def span(text: str) -> tuple[float, float]:
    """START:DURATION in seconds, e.g. ``5:0.6``."""
    try:
        start, dur = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected START:DURATION in seconds (e.g. 5:0.6), got {text!r}"
        ) from None
    if start < 0 or dur <= 0:
        raise argparse.ArgumentTypeError(f"start must be >= 0 and duration > 0, got {text!r}")
    return start, dur


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def content_every(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    # (1 and 2 s are what the accuracy benches measured; more often only costs more)
    if not 0.25 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"must lie in [0.25, 2] s, got {text!r}")
    return value


def lags(text: str) -> tuple[float, ...]:
    try:
        lags = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of milliseconds: {text!r}") from None
    if any(x < 0 or x > 5000 for x in lags):
        raise argparse.ArgumentTypeError(f"lags must lie in [0, 5000] ms: {text!r}")
    return lags


Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def lk_credentials(args: argparse.Namespace) -> Any:
    import logging

    from ..live.config import LiveKitCredentials
    from ..logs import add_secret

    add_secret(args.api_secret)
    add_secret(os.environ.get("LIVEKIT_API_SECRET"))
    add_secret(getattr(args, "token", None))
    if args.api_secret:
        logging.getLogger("syncmon").warning(
            "--api-secret on the command line is visible to every user of this host (ps); "
            "prefer LIVEKIT_API_SECRET or --api-secret-file"
        )
    creds = LiveKitCredentials.resolve(
        url=args.url,
        api_key=args.api_key,
        api_secret=args.api_secret,
        token=getattr(args, "token", None),
        api_secret_file=getattr(args, "api_secret_file", None),
    )
    add_secret(creds.api_secret)
    return creds


def add_conn_args(p: argparse.ArgumentParser, *, token: bool = True) -> None:
    p.add_argument("--url", default=None, help="LiveKit URL (env LIVEKIT_URL)")
    p.add_argument("--api-key", default=None, help="API key (env LIVEKIT_API_KEY)")
    p.add_argument(
        "--api-secret",
        default=None,
        help="API secret (env LIVEKIT_API_SECRET; shows in ps: prefer the env or a file)",
    )
    p.add_argument(
        "--api-secret-file",
        default=None,
        help="read the API secret from this file (env LIVEKIT_API_SECRET_FILE)",
    )
    if token:
        p.add_argument(
            "--token",
            default=None,
            help="a ready token instead of key and secret (must be hidden, subscribe-only)",
        )


def add_calibration(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibration-ms",
        type=float,
        default=0.0,
        help="the avatar model's own fixed mouth offset, subtracted (default 0)",
    )
    p.add_argument(
        "--no-face",
        dest="face",
        action="store_false",
        help="do not look for the avatar's face (a mouth frozen from the start, or before the "
        "mouth is located by what follows the voice, is then not counted as lip-still, and "
        "later freezes are judged by the correlation with the voice alone)",
    )


def add_monitor_args(p: argparse.ArgumentParser, *, max_rooms_help: str) -> None:
    """What ``watch`` and ``worker`` share: the avatar, where to serve, the room cap, linger."""
    p.add_argument(
        "--participant",
        default=None,
        help="avatar identity (default: agents and lk.publish_on_behalf participants)",
    )
    p.add_argument(
        "--metrics-addr",
        default="127.0.0.1:9464",
        help="where /metrics, /healthz, /readyz, /report listen (default %(default)s)",
    )
    add_calibration(p)
    # live, the face is on by default (--no-face above turns it off): without it a mouth frozen
    # from the start is never counted, and a later freeze is judged by the correlation with the
    # voice alone, which a frozen mouth on a nodding head keeps for seconds. It costs about two
    # points of a core per stream (README, Performance).
    p.add_argument(
        "--face",
        dest="face",
        action="store_true",
        help="look for the avatar's face (the default; kept for the command lines that ask)",
    )
    p.set_defaults(face=True)
    p.add_argument(
        "--turns",
        action="store_true",
        help="also follow the voices of the room's users (their microphone audio, never stored: "
        "only when each speaks) and measure how fast the avatar answers and stops when talked "
        "over (syncmon_turn_response_seconds, syncmon_interruption_stop_seconds)",
    )
    p.add_argument("--max-rooms", type=int, default=100, help=max_rooms_help)
    p.add_argument(
        "--content-every",
        type=content_every,
        default=2.0,
        metavar="SECONDS",
        help="a content estimate (over the last 8 s) this often (default %(default)s; "
        "`syncmon analyze` makes one a second; each costs a few ms of CPU)",
    )
    p.add_argument(
        "--series-linger-s",
        type=float,
        default=30.0,
        help="keep the series of a departed avatar or ended room this long (default %(default)s)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
