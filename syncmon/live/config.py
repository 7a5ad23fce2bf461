"""Connection settings: flag > LIVEKIT_* environment variable > default, checked at start."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from ..errors import ConfigError

DEFAULT_TOKEN_TTL = datetime.timedelta(hours=6)


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
        api_secret_file: str | None = None,
    ) -> LiveKitCredentials:
        url = url or os.environ.get("LIVEKIT_URL")
        api_key = api_key or os.environ.get("LIVEKIT_API_KEY")
        secret_file = api_secret_file or os.environ.get("LIVEKIT_API_SECRET_FILE")
        if not api_secret and secret_file:
            api_secret = read_secret_file(secret_file)
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


def read_secret_file(path: str) -> str:
    """The secret in ``path`` (a mounted Kubernetes Secret, say), surrounding blanks stripped."""
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as e:
        raise ConfigError(f"--api-secret-file {path!r} cannot be read: {e.strerror}") from None
    if not value:
        raise ConfigError(f"--api-secret-file {path!r} is empty")
    return value


def token_room(token: str) -> str | None:
    """The room a LiveKit JWT grants (its ``video.room``), read without verifying it; None when
    it names none or is not a JWT (the server will say what is wrong with it)."""
    import base64
    import json

    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        pad = "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + pad))
    except (ValueError, UnicodeDecodeError):
        return None
    video = claims.get("video") if isinstance(claims, dict) else None
    room = video.get("room") if isinstance(video, dict) else None
    return room if isinstance(room, str) and room else None


def parse_addr(addr: str, flag: str = "--metrics-addr") -> tuple[str, int]:
    """``host:port`` → (host, port), with a message naming the flag."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{flag} {addr!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)
