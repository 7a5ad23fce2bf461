"""Alert rules, recording rules and dashboards generated from one config (``MixinConfig``)."""

from __future__ import annotations

from .dashboards import dashboards
from .rules import MixinConfig, alert_rules, recording_rules, rule_file

__all__ = ["MixinConfig", "alert_rules", "dashboards", "recording_rules", "rule_file"]
