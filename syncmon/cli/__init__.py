"""The ``syncmon`` command: one module per group of commands (``analyze``, ``monitor``: watch and
worker, ``lab``: reference and demo), their shared flags in ``args``; ``main`` here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import SyncmonError
from .analyze import add_analyze
from .lab import add_avatar, add_conversation, add_demo, add_publish, add_render
from .monitor import add_watch, add_worker

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="syncmon", description="Lip-sync and frame-timing monitor for AI avatars in LiveKit"
    )
    p.add_argument("--version", action="version", version=f"syncmon {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    add_analyze(sub)
    ref = sub.add_parser("reference", help="the reference avatar").add_subparsers(
        dest="ref_command", required=True
    )
    add_render(ref)
    add_watch(sub)
    add_worker(sub)
    add_publish(ref)
    add_avatar(ref)
    add_conversation(ref)
    add_demo(sub)
    return p


# commands that load the LiveKit native SDK: after their own orderly shutdown (rooms
# disconnected, streams closed) they leave through os._exit, because the SDK's native runtime
# sometimes aborts while Python finalizes ("panic in a function that cannot unwind", SIGABRT)
_NATIVE_COMMANDS = {"watch", "worker", "demo", "reference publish", "reference avatar"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ..threads import limit_numeric_threads

    limit_numeric_threads()
    code = _run(args)
    name = args.command + (f" {args.ref_command}" if args.command == "reference" else "")
    if name in _NATIVE_COMMANDS and not getattr(args, "offline", False) and argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except SyncmonError as e:
        from ..logs import redact

        print(f"syncmon: error: {redact(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
