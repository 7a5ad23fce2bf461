"""The monitor's commands: ``syncmon watch`` (rooms by name) and ``syncmon worker`` (rooms by
agent dispatch)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import SyncmonError
from .args import Subparsers, add_conn_args, add_monitor_args, lk_credentials, positive_int

if TYPE_CHECKING:  # the live layer loads the SDK: only when a command runs
    from ..live.room import WatchOptions


def cmd_watch(args: argparse.Namespace) -> int:
    import asyncio

    from ..live.config import parse_addr
    from ..live.watch import WatchConfig, run_watch
    from ..logs import setup_logging

    setup_logging(args.verbose)
    host, port = parse_addr(args.metrics_addr)
    if args.token and len(args.room) > 1:
        raise SyncmonError("--token is valid for one room only; give key and secret for several")
    if args.token:
        from ..live.config import token_room

        granted = token_room(args.token)
        if granted is not None and granted != args.room[0]:
            # the metrics would carry --room's name while syncmon sits in the token's room
            raise SyncmonError(
                f"--token grants room {granted!r}, not --room {args.room[0]!r}: "
                "give the token's room, or a token for that room"
            )
    cfg = WatchConfig(
        creds=lk_credentials(args),
        rooms=tuple(args.room),
        metrics_host=host,
        metrics_port=port,
        options=watch_options(args),
        wait_for_room=args.wait_for_room,
        max_rooms=args.max_rooms,
        print_table=args.table,
    )
    return asyncio.run(run_watch(cfg))


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    from ..live.config import parse_addr
    from ..live.pool import usable_cores
    from ..live.worker import WorkerConfig, run_worker
    from ..logs import setup_logging

    setup_logging(args.verbose)
    host, port = parse_addr(args.metrics_addr)
    cfg = WorkerConfig(
        creds=lk_credentials(args),
        agent_name=args.agent_name,
        metrics_host=host,
        metrics_port=port,
        options=watch_options(args),
        max_rooms=args.max_rooms,
        # more processes than rooms would only hold memory
        processes=args.processes or min(usable_cores(), args.max_rooms),
        verbose=args.verbose,
    )
    return asyncio.run(run_worker(cfg))


def watch_options(args: argparse.Namespace) -> WatchOptions:
    """What every room's monitor is told, from the flags watch and worker share."""
    from ..live.room import WatchOptions

    return WatchOptions(
        participant=args.participant,
        calibration_s=args.calibration_ms / 1000.0,
        face=args.face,
        content_every_s=args.content_every,
        turns=args.turns,
        linger_s=args.series_linger_s,
    )


def add_watch(sub: Subparsers) -> None:
    w = sub.add_parser("watch", help="monitor the avatars of live LiveKit rooms")
    add_conn_args(w)
    w.add_argument("--room", action="append", required=True, help="room to monitor (repeatable)")
    w.add_argument(
        "--wait-for-room",
        action="store_true",
        help="wait until the room exists instead of creating it by joining",
    )
    w.add_argument("--table", action="store_true", help="print a table every second")
    add_monitor_args(w, max_rooms_help="cap on rooms per process")
    w.set_defaults(func=cmd_watch)


def add_worker(sub: Subparsers) -> None:
    wk = sub.add_parser(
        "worker", help="scale-out: one monitor job per room via LiveKit agent dispatch"
    )
    add_conn_args(wk, token=False)
    wk.add_argument(
        "--agent-name",
        default="syncmon",
        help="the agent name rooms are dispatched to (default %(default)s)",
    )
    add_monitor_args(wk, max_rooms_help="rooms per worker; further dispatches go to other workers")
    wk.add_argument(
        "--processes",
        type=positive_int,
        default=None,
        help="processes the rooms run in (default: one per usable core; 1: threads of one process)",
    )
    wk.set_defaults(func=cmd_worker)
