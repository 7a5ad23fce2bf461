"""The measurement core: numpy (and OpenCV for the face), no I/O, streaming with bounded memory."""

from __future__ import annotations

from .audio import AudioAnalyzer
from .drift import DriftEstimate, DriftEstimator
from .lipsync import ContentOffsetEstimator, LipSyncConfig, LipSyncEstimate, luma_grid
from .session import AnalyzerConfig, SyncAnalyzer
from .video import VideoTimingAnalyzer, VideoTimingStats, freeze_threshold

__all__ = [
    "AnalyzerConfig",
    "AudioAnalyzer",
    "ContentOffsetEstimator",
    "DriftEstimate",
    "DriftEstimator",
    "LipSyncConfig",
    "LipSyncEstimate",
    "SyncAnalyzer",
    "VideoTimingAnalyzer",
    "VideoTimingStats",
    "freeze_threshold",
    "luma_grid",
]
