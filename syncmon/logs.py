"""Logging set-up that keeps secrets out of every line, including the SDK's own.

livekit's native layer logs connection errors with the token in them ("invalid token: eyJ...");
every record passes through ``redact`` before it is written.
"""

from __future__ import annotations

import logging
import re
import time

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_QUERY_TOKEN = re.compile(r"(access_token=)[^&\s]+")
_secrets: set[str] = set()


def add_secret(value: str | None) -> None:
    """Register a value (an API secret) that must never appear in output."""
    if value and len(value) >= 6:
        _secrets.add(value)


def redact(text: str) -> str:
    text = _JWT.sub("<token>", text)
    text = _QUERY_TOKEN.sub(r"\1<token>", text)
    for s in _secrets:
        text = text.replace(s, "<secret>")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record: a traceback (``exc_info``) quotes the arguments and
    messages of the exceptions in it, tokens included, and the message filter never sees it."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RateLimitedLog:
    """At most one line per key per ``every_s``; the lines held back are counted in the next.

    For input from room participants: a flood of bad packets must not become a flood of logs.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 60.0) -> None:
        self._log = logger
        self._every = every_s
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last, held = self._last.get(key, (-float("inf"), 0))
        if now - last < self._every:
            self._last[key] = (last, held + 1)
            return
        if len(self._last) > 1024:  # keys are participants: bounded, oldest forgotten
            self._last.pop(next(iter(self._last)))
        self._last[key] = (now, 0)
        suffix = f" ({held} more like it in the last {self._every:.0f} s)" if held else ""
        self._log.warning(msg + suffix, *args)


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # -v: syncmon's own details (each timestamp estimate, ...), the SDK's at INFO
    logging.getLogger("syncmon").setLevel(logging.DEBUG if verbose else logging.NOTSET)
