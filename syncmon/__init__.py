"""syncmon: lip-sync, frame-timing and drift monitor for AI avatars in LiveKit rooms."""

from __future__ import annotations

__version__ = "0.1.0"
