"""The few named errors syncmon raises; each message names what was wrong, never a secret."""

from __future__ import annotations


class SyncmonError(Exception):
    """Base of syncmon's errors; the CLI prints the message and exits with code 2."""


class MediaError(SyncmonError):
    """A recording that cannot be analyzed: not media, no audio or video, truncated."""


class ConfigError(SyncmonError):
    """A flag or environment variable with a bad value."""


class ConnectError(SyncmonError):
    """The LiveKit server could not be reached or refused the credentials."""
