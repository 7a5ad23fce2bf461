"""Logging set-up that keeps secrets out of every line, including the SDK's own.

livekit's native layer logs connection errors with the token in them ("invalid token: eyJ...");
every record passes through ``redact`` before it is written.
"""

from __future__ import annotations

import logging
import re

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


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # -v: syncmon's own details (each timestamp estimate, ...), the SDK's at INFO
    logging.getLogger("syncmon").setLevel(logging.DEBUG if verbose else logging.NOTSET)
