"""Prometheus recording and alert rules, generated from one config (the mixin manner).

The thresholds come from ``syncmon.thresholds`` (shared/DESIGN.md), the metric names from
``syncmon.metric_names``; ``python -m syncmon.mixin`` writes them to deploy/prometheus/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import metric_names as n
from ..thresholds import CRITICAL_BAND, WARNING_BAND

CONTENT = 'method="content"'
TIMESTAMP = 'method="timestamp"'
VIDEO = 'kind="video"'


@dataclass(frozen=True)
class MixinConfig:
    """Thresholds and selectors of the rules and dashboards, in one place."""

    selector: str = ""  # extra label matchers for every syncmon series, e.g. 'cluster="eu"'
    job_selector: str = 'job=~"syncmon.*"'
    warning_low_s: float = WARNING_BAND.low_s
    warning_high_s: float = WARNING_BAND.high_s
    critical_low_s: float = CRITICAL_BAND.low_s
    critical_high_s: float = CRITICAL_BAND.high_s
    lipsync_for: str = "1m"
    drift_s_per_min: float = 0.010
    drift_for: str = "5m"
    freeze_ratio: float = 0.02  # share of time frozen
    freeze_for: str = "2m"
    drop_ratio: float = 0.05
    drop_for: str = "5m"
    lip_still_s: float = 2.0  # speaking seconds with a still mouth within lip_still_window
    lip_still_window: str = "5m"
    # the face found in under this share of an avatar's frames over face_window, for face_for:
    # lip-still falls back on the voice's correlation (a mouth frozen from the start is not
    # counted). Not a page: the avatar may have no detectable face by design
    face_seen_ratio: float = 0.5
    face_window: str = "10m"
    face_for: str = "10m"
    # the voice spoke in at least unmeasured_min_windows content windows over unmeasured_window
    # and more than unmeasured_ratio of them gave no offset (no frozen mouth counted there):
    # the content offset, and every lip-sync alert on it, is blind. Live windows hop by 1 s
    unmeasured_ratio: float = 0.9
    unmeasured_window: str = "15m"
    unmeasured_min_windows: int = 120
    unmeasured_for: str = "5m"
    no_frames_s: float = 10.0
    no_frames_for: str = "1m"
    down_for: str = "2m"
    # the monitor's own lag behind a picture (its host short of CPU), held this long
    behind_s: float = 1.0
    behind_for: str = "2m"
    # turns (--turns): the avatar's voice answering later than this at p90, over at least
    # response_min_turns turns in 5 minutes, for response_for
    response_p90_s: float = 2.5
    response_min_turns: int = 3
    response_for: str = "5m"
    runbook_base: str = "https://github.com/syncmon/syncmon/blob/main/docs/runbooks.md"
    extra: dict[str, str] = field(default_factory=dict)

    def sel(self, *matchers: str) -> str:
        parts = [m for m in (self.selector, *matchers) if m]
        return "{" + ",".join(parts) + "}" if parts else ""


def agent_as_monitor(expr: str) -> str:
    """An agent-side (OTel) series relabelled to the monitor's ``room``/``participant``."""
    return (
        f'label_replace(label_replace({expr}, "room", "$1", "{n.AGENT_LABEL_ROOM}", "(.*)"), '
        f'"participant", "$1", "{n.AGENT_LABEL_PARTICIPANT}", "(.*)")'
    )


def offset_decomposition(c: MixinConfig, *matchers: str) -> tuple[str, str]:
    """(avatar model's own error, transport) in seconds, by room and participant.

    content - timestamp: what the viewer sees minus the pipeline's timing, i.e. the model's
    mouth against its own audio; timestamp - sender skew: what the network and the receiver add.
    """
    by = "room, participant"
    content = f"max by ({by}) ({n.AV_OFFSET}{c.sel(CONTENT, *matchers)})"
    ts = f"max by ({by}) ({n.AV_OFFSET}{c.sel(TIMESTAMP, *matchers)})"
    agent_m = [
        m.replace("room=", f"{n.AGENT_LABEL_ROOM}=").replace(
            "participant=", f"{n.AGENT_LABEL_PARTICIPANT}="
        )
        for m in matchers
    ]
    skew = f"max by ({by}) ({agent_as_monitor(n.AGENT_SENDER_SKEW + c.sel(*agent_m))})"
    return f"{content} - on ({by}) {ts}", f"{ts} - on ({by}) {skew}"


def recording_rules(c: MixinConfig) -> dict[str, Any]:
    by = "room, participant"
    off = f"{n.AV_OFFSET}{c.sel(CONTENT)}"
    frames = f"rate({n.VIDEO_FRAMES}{c.sel()}[5m])"
    dropped = f"rate({n.VIDEO_DROPPED}{c.sel()}[5m])"
    return {
        "name": "syncmon.rules",
        "rules": [
            {
                "record": "syncmon:av_offset_seconds:avg1m",
                "expr": f"avg_over_time({n.AV_OFFSET}{c.sel()}[1m])",
            },
            {
                "record": "syncmon:video_freeze_ratio:rate5m",
                "expr": f"sum by ({by}) (rate({n.VIDEO_FREEZE_SECONDS}{c.sel()}[5m]))",
            },
            {
                "record": "syncmon:video_drop_ratio:rate5m",
                "expr": f"sum by ({by}) ({dropped}) / "
                f"clamp_min(sum by ({by}) ({frames} + {dropped}), 1e-9)",
            },
            {
                "record": "syncmon:avatar_model_offset_seconds",
                "expr": offset_decomposition(c)[0],
            },
            {
                "record": "syncmon:transport_offset_seconds",
                "expr": offset_decomposition(c)[1],
            },
            {
                "record": "syncmon:rooms_out_of_tolerance:count",
                "expr": f"count(({off} > {c.warning_high_s}) or ({off} < {c.warning_low_s})) "
                "or vector(0)",
            },
        ],
    }


def _alert(
    c: MixinConfig,
    name: str,
    expr: str,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    anchor: str,
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **c.extra},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{c.runbook_base}#{anchor}",
        },
    }


WHERE = "{{ $labels.participant }} in room {{ $labels.room }}"


def alert_rules(c: MixinConfig) -> dict[str, Any]:
    return {
        "name": "syncmon.alerts",
        "rules": [
            *_lipsync_alerts(c),
            *_video_alerts(c),
            *_turn_alerts(c),
            *_monitor_alerts(c),
        ],
    }


def _lipsync_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    off = f"{n.AV_OFFSET}{c.sel(CONTENT)}"
    ms = "{{ $value | humanize }}s"
    where = WHERE
    return [
        _alert(
            c,
            "SyncmonLipSyncWarning",
            f"{off} > {c.warning_high_s} or {off} < {c.warning_low_s}",
            c.lipsync_for,
            "warning",
            "Lip-sync offset is noticeable",
            f"The picture of {where} is off its voice by {ms} (t_video - t_audio; outside "
            f"ITU-R BT.1359 detectability [{c.warning_low_s * 1000:g}, "
            f"{c.warning_high_s * 1000:g}] ms).",
            "lip-sync-offset",
        ),
        _alert(
            c,
            "SyncmonLipSyncCritical",
            f"{off} > {c.critical_high_s} or {off} < {c.critical_low_s}",
            c.lipsync_for,
            "critical",
            "Lip-sync offset is unacceptable",
            f"The picture of {where} is off its voice by {ms} (t_video - t_audio; outside "
            f"ITU-R BT.1359 acceptability [{c.critical_low_s * 1000:g}, "
            f"{c.critical_high_s * 1000:g}] ms).",
            "lip-sync-offset",
        ),
        _alert(
            c,
            "SyncmonLipSyncDriftGrowing",
            f"abs({n.AV_DRIFT}{c.sel()}) > {c.drift_s_per_min}",
            c.drift_for,
            "warning",
            "Lip-sync drifts apart over the session",
            f"The offset of {where} changes by {{{{ $value | humanize }}}}s per minute.",
            "drift",
        ),
        _alert(
            c,
            "SyncmonLipStill",
            f"increase({n.LIP_STILL_SECONDS}{c.sel()}[{c.lip_still_window}]) > {c.lip_still_s}",
            "0m",
            "warning",
            "The avatar speaks with a still mouth",
            f"The mouth of {where} did not move for {{{{ $value | humanize }}}}s of speech "
            f"over the last {c.lip_still_window} (frozen mouth; the voice goes on).",
            "lip-still",
        ),
        _alert(
            c,
            "SyncmonFaceNotSeen",
            f"{face_seen_share(c)} < {c.face_seen_ratio}",
            c.face_for,
            "warning",
            "syncmon does not see the avatar's face",
            f"syncmon found the face of {where} in {{{{ $value | humanizePercentage }}}} of "
            f"its frames over the last {c.face_window}: a still mouth is judged by the voice's "
            "correlation alone there, and one frozen from the start is not counted.",
            "face-not-seen",
        ),
        _alert(
            c,
            "SyncmonLipSyncUnmeasured",
            f"{unmeasured_share(c)} > {c.unmeasured_ratio} "
            f"and on (room, participant) {_windows(c, SPEAKING)} >= {c.unmeasured_min_windows} "
            f"unless on (room, participant) sum by (room, participant) "
            f"(increase({n.LIP_STILL_SECONDS}{c.sel()}[{c.unmeasured_window}])) > 0",
            c.unmeasured_for,
            "warning",
            "syncmon cannot measure the avatar's lip-sync",
            f"In {{{{ $value | humanizePercentage }}}} of the content windows over the last "
            f"{c.unmeasured_window} in which {where} spoke, its mouth gave no lip-sync offset "
            "(no mouth found that follows the voice): the lip-sync alerts cannot fire for it.",
            "lip-sync-unmeasured",
        ),
    ]


SPEAKING = 'result=~"measured|unmeasured"'
UNMEASURED = 'result="unmeasured"'


def _windows(c: MixinConfig, result: str, window: str | None = None) -> str:
    """The content windows of ``result`` (a label matcher) per avatar over ``window``."""
    w = window or c.unmeasured_window
    return f"sum by (room, participant) (increase({n.CONTENT_WINDOWS}{c.sel(result)}[{w}]))"


def unmeasured_share(c: MixinConfig, window: str | None = None) -> str:
    """The share of an avatar's speaking content windows that gave no offset (NaN where the
    voice did not speak: no result)."""
    return f"{_windows(c, UNMEASURED, window)} / {_windows(c, SPEAKING, window)}"


def face_seen_share(c: MixinConfig) -> str:
    """The share of an avatar's frames its face was tracked in over ``face_window`` (NaN
    without frames: no result; no series where the face is not looked for, --no-face)."""
    w = c.face_window
    return (
        f"sum by (room, participant) (rate({n.FACE_FRAMES}{c.sel()}[{w}])) / "
        f"sum by (room, participant) (rate({n.VIDEO_FRAMES}{c.sel()}[{w}]))"
    )


def _video_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    video = c.sel(VIDEO)
    where = WHERE
    return [
        _alert(
            c,
            "SyncmonVideoFreezing",
            f"syncmon:video_freeze_ratio:rate5m{c.sel()} > {c.freeze_ratio}",
            c.freeze_for,
            "warning",
            "The avatar's picture freezes",
            f"The picture of {where} has been frozen {{{{ $value | humanizePercentage }}}} "
            "of the last 5 minutes.",
            "freezes",
        ),
        _alert(
            c,
            "SyncmonFrameDrops",
            f"syncmon:video_drop_ratio:rate5m{c.sel()} > {c.drop_ratio}",
            c.drop_for,
            "warning",
            "The avatar's video loses frames",
            f"{{{{ $value | humanizePercentage }}}} of the frames of {where} were lost "
            "over the last 5 minutes.",
            "frame-drops",
        ),
        _alert(
            c,
            "SyncmonNoVideoFrames",
            f"{n.TRACK_UP}{video} == 0 or "
            f"(time() - {n.LAST_FRAME_TIMESTAMP}{video}) > {c.no_frames_s}",
            c.no_frames_for,
            "critical",
            "No video frames from the avatar",
            f"{where} sends no video (track down or no frame for {c.no_frames_s:g} s).",
            "no-frames",
        ),
    ]


def response_p90(c: MixinConfig, path: str = "audio") -> str:
    """p90 of the response latency over 5 minutes, per avatar."""
    sel = c.sel(f'path="{path}"')
    return (
        "histogram_quantile(0.9, sum by (room, participant, le) "
        f"(rate({n.TURN_RESPONSE}_bucket{sel}[5m])))"
    )


def _turn_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    sel = c.sel('path="audio"')
    turns = (
        f"sum by (room, participant) (increase({n.TURN_RESPONSE}_count{sel}[5m])) "
        f">= {c.response_min_turns}"
    )
    return [
        _alert(
            c,
            "SyncmonSlowResponse",
            f"({response_p90(c)} > {c.response_p90_s}) and on (room, participant) ({turns})",
            c.response_for,
            "warning",
            "The avatar answers slowly",
            f"{WHERE} starts answering {{{{ $value | humanize }}}}s after the user stops "
            f"talking (p90 over 5 minutes; threshold {c.response_p90_s:g} s).",
            "slow-response",
        ),
    ]


def _monitor_alerts(c: MixinConfig) -> list[dict[str, Any]]:
    return [
        _alert(
            c,
            "SyncmonRoomDisconnected",
            f"{n.ROOM_CONNECTED}{c.sel()} == 0",
            c.down_for,
            "warning",
            "syncmon lost its room",
            "syncmon has not been connected to room {{ $labels.room }} for "
            f"{c.down_for}; it keeps retrying.",
            "monitor-down",
        ),
        _alert(
            c,
            "SyncmonMonitorBehind",
            f"(max by (room, participant) ({n.MONITOR_BACKLOG}{c.sel()}) > {c.behind_s}) or "
            f"(sum by (room, participant) (increase({n.MONITOR_FRAMES_SHED}{c.sel()}[5m])) > 0)",
            c.behind_for,
            "warning",
            "syncmon cannot keep up with the picture",
            f"syncmon is behind the picture of {WHERE} or shed frames of it in the last 5 "
            "minutes (its host is short of CPU): its measures of this avatar have gaps.",
            "monitor-behind",
        ),
        _alert(
            c,
            "SyncmonMonitorDown",
            f"up{{{c.job_selector}}} == 0",
            c.down_for,
            "critical",
            "syncmon is not scraped",
            "Prometheus cannot scrape syncmon at {{ $labels.instance }}.",
            "monitor-down",
        ),
    ]


def rule_file(c: MixinConfig | None = None) -> dict[str, Any]:
    c = c or MixinConfig()
    return {"groups": [recording_rules(c), alert_rules(c)]}
