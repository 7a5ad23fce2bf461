"""Connection settings: flag > LIVEKIT_* environment variable > default, checked at start."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from ..errors import ConfigError

DEFAULT_TOKEN_TTL = datetime.timedelta(hours=6)
DEFAULT_METRICS_ADDR = "127.0.0.1:9464"


@dataclass(frozen=True)
class LiveKitCredentials:
    """Where and as whom to connect. ``repr`` never shows the secret or the token."""

    url: str
    api_key: str | None = None
    api_secret: str | None = None
    token: str | None = None

    def __repr__(self) -> str:
        return f"LiveKitCredentials(url={self.url!r}, api_key={self.api_key!r}, secret=***)"

    @classmethod
    def resolve(
        cls,
        *,
        url: str | None,
        api_key: str | None,
        api_secret: str | None,
        token: str | None,
    ) -> LiveKitCredentials:
        url = url or os.environ.get("LIVEKIT_URL")
        api_key = api_key or os.environ.get("LIVEKIT_API_KEY")
        api_secret = api_secret or os.environ.get("LIVEKIT_API_SECRET")
        if not url:
            raise ConfigError("no LiveKit URL: pass --url or set LIVEKIT_URL")
        u = urlparse(url)
        if u.scheme not in ("ws", "wss", "http", "https") or not u.hostname:
            raise ConfigError(
                f"--url {url!r} is not a LiveKit URL (expected ws://host:port or wss://host)"
            )
        if not token and not (api_key and api_secret):
            raise ConfigError(
                "no credentials: pass --token, or --api-key and --api-secret "
                "(or set LIVEKIT_API_KEY and LIVEKIT_API_SECRET)"
            )
        return cls(url=url, api_key=api_key, api_secret=api_secret, token=token)


def parse_addr(addr: str, flag: str = "--metrics-addr") -> tuple[str, int]:
    """``host:port`` → (host, port), with a message naming the flag."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{flag} {addr!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)
