"""The reference avatar: a face whose mouth follows synthetic speech, with impairments."""

from __future__ import annotations

from .avatar import Impairments, ReferenceAvatar, Truth, VideoOut, loud_positions
from .face import FaceRenderer, YuvFrame
from .speech import SpeechSource

__all__ = [
    "FaceRenderer",
    "Impairments",
    "ReferenceAvatar",
    "SpeechSource",
    "Truth",
    "VideoOut",
    "YuvFrame",
    "loud_positions",
]
