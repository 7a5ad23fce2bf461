"""Lip-sync tolerance bands (shared/DESIGN.md), in seconds, offset = t_video - t_audio.

One place for the numbers: the verdict, the alert rules and the dashboards' thresholds read them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    name: str
    low_s: float  # most negative allowed offset (sound lags)
    high_s: float  # most positive allowed offset (sound leads)

    def contains(self, offset_s: float) -> bool:
        return self.low_s <= offset_s <= self.high_s


ATSC_IS191 = Band("atsc_is191", -0.045, 0.015)
ITU_DETECTABILITY = Band("itu_bt1359_detectability", -0.125, 0.045)
ITU_ACCEPTABILITY = Band("itu_bt1359_acceptability", -0.185, 0.090)

WARNING_BAND = ITU_DETECTABILITY
CRITICAL_BAND = ITU_ACCEPTABILITY


def verdict(
    offset_s: float | None, *, warning: Band = WARNING_BAND, critical: Band = CRITICAL_BAND
) -> str:
    """ok / warning / critical for an offset; an unknown offset is not a failure."""
    if offset_s is None or critical is None:
        return "ok"
    if not critical.contains(offset_s):
        return "critical"
    if not warning.contains(offset_s):
        return "warning"
    return "ok"
