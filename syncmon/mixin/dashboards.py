"""Grafana dashboards (schema 39), generated from the metric names the exporter renders."""

from __future__ import annotations

from typing import Any

from .. import metric_names as n
from ..thresholds import ATSC_IS191, ITU_ACCEPTABILITY, ITU_DETECTABILITY
from .rules import (
    MixinConfig,
    face_seen_share,
    offset_decomposition,
    response_p90,
    unmeasured_share,
)

DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39


class _Grid:
    """Lays panels left to right, wrapping at 24 columns."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos


def _panel(
    grid: _Grid,
    kind: str,
    title: str,
    targets: list[tuple[str, str]],
    *,
    w: int = 12,
    h: int = 8,
    unit: str = "short",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "id": grid.next_id,
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": grid.place(w, h),
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    grid.next_id += 1
    if extra:
        for k, v in extra.items():
            if k == "defaults":
                p["fieldConfig"]["defaults"].update(v)
            else:
                p[k] = v
    return p


def _var_datasource() -> dict[str, Any]:
    return {
        "name": "datasource",
        "type": "datasource",
        "query": "prometheus",
        "label": "Data source",
        "current": {},
        "hide": 0,
    }


def _var_query(name: str, query: str, label: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "label": label,
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "current": {},
        "includeAll": False,
        "multi": False,
        "hide": 0,
    }


def _dashboard(
    uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["syncmon", "livekit", "avatar"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "timezone": "",
        "templating": {"list": variables},
        "annotations": {"list": []},
        "panels": panels,
    }


def _offset_thresholds() -> dict[str, Any]:
    """ITU acceptability (red), detectability (orange) and ATSC (green) drawn as bands."""
    steps = [
        {"color": "red", "value": None},
        {"color": "orange", "value": ITU_ACCEPTABILITY.low_s},
        {"color": "yellow", "value": ITU_DETECTABILITY.low_s},
        {"color": "green", "value": ATSC_IS191.low_s},
        {"color": "yellow", "value": ATSC_IS191.high_s},
        {"color": "orange", "value": ITU_DETECTABILITY.high_s},
        {"color": "red", "value": ITU_ACCEPTABILITY.high_s},
    ]
    return {
        "thresholds": {"mode": "absolute", "steps": steps},
        "custom": {"thresholdsStyle": {"mode": "line+area"}},
    }


def _agent_sel(c: MixinConfig, *extra: str) -> str:
    return c.sel(
        f'{n.AGENT_LABEL_ROOM}="$room"', f'{n.AGENT_LABEL_PARTICIPANT}="$participant"', *extra
    )


def _agent_panels(g: _Grid, c: MixinConfig, *, w: int = 8) -> list[dict[str, Any]]:
    """The avatar worker's own view (syncmon.instrument), beside the monitor's."""
    a = _agent_sel(c)

    def q(p: float) -> str:
        return (
            f"histogram_quantile({p}, sum by (le) (rate({n.AGENT_PROCESSING_TIME}_bucket{a}[1m])))"
        )

    return [
        _panel(
            g,
            "timeseries",
            "Agent: sender A/V skew",
            [
                (f"{n.AGENT_SENDER_SKEW}{a}", "picture leaves minus its audio leaves"),
                (f"{n.AGENT_SENDER_SKEW_UNCERTAINTY}{a}", "+/- (audio leave placed, not known)"),
            ],
            w=w,
            unit="s",
            extra={"defaults": _offset_thresholds()},
        ),
        _panel(
            g,
            "timeseries",
            "Agent: processing time (audio in -> frame out)",
            [(q(0.5), "p50"), (q(0.95), "p95")],
            w=w,
            unit="s",
        ),
        _panel(
            g,
            "timeseries",
            "Agent: a reply's audio in -> its first picture sent",
            [
                (
                    f"histogram_quantile({p}, sum by (le) "
                    f"(rate({n.AGENT_FIRST_FRAME_LATENCY}_bucket{a}[5m])))",
                    f"p{round(p * 100)}",
                )
                for p in (0.5, 0.9)
            ],
            w=w,
            unit="s",
        ),
        _panel(
            g,
            "timeseries",
            "Agent: buffers",
            [
                (f"{n.AGENT_AUDIO_BACKLOG}{a}", "audio in the generator (s)"),
                (f"{n.AGENT_AUDIO_SOURCE_QUEUED}{a}", "audio source queue (s)"),
            ],
            w=w,
            unit="s",
        ),
        _panel(
            g,
            "timeseries",
            "Agent: runtime queues (depth / capacity)",
            [
                (f"{n.AGENT_RUNTIME_QUEUE}{a}", "{{queue}} depth"),
                (f"{n.AGENT_RUNTIME_QUEUE_CAPACITY}{a}", "{{queue}} capacity"),
                (f"{n.AGENT_SYNC_VIDEO_QUEUE}{a}", "synchronizer video queue"),
            ],
            w=w,
        ),
    ]


def overview(c: MixinConfig) -> dict[str, Any]:
    g = _Grid()
    content = c.sel('method="content"')
    video = c.sel('kind="video"')
    panels = [
        _panel(
            g,
            "stat",
            "Rooms monitored",
            [(f"count({n.ROOM_CONNECTED}{c.sel()} == 1) or vector(0)", "rooms")],
            w=6,
            h=4,
        ),
        _panel(
            g,
            "stat",
            "Rooms out of tolerance",
            [(f"syncmon:rooms_out_of_tolerance:count{c.sel()}", "rooms")],
            w=6,
            h=4,
        ),
        _panel(
            g,
            "stat",
            "Avatars with video",
            [(f"count({n.TRACK_UP}{video} == 1) or vector(0)", "avatars")],
            w=6,
            h=4,
        ),
        _panel(
            g,
            "stat",
            "Reconnects (1h)",
            [(f"sum(increase({n.RECONNECTS}{c.sel()}[1h])) or vector(0)", "reconnects")],
            w=6,
            h=4,
        ),
        _panel(
            g,
            "table",
            "Worst lip-sync offsets",
            [(f"topk(10, abs({n.AV_OFFSET}{content}))", "{{room}} / {{participant}}")],
            w=24,
            h=8,
            unit="s",
            extra={"defaults": {}},
        ),
        _panel(
            g,
            "timeseries",
            "Freeze rate (share of time frozen)",
            [(f"syncmon:video_freeze_ratio:rate5m{c.sel()}", "{{room}} / {{participant}}")],
            unit="percentunit",
        ),
        _panel(
            g,
            "timeseries",
            "Frame drop rate",
            [(f"syncmon:video_drop_ratio:rate5m{c.sel()}", "{{room}} / {{participant}}")],
            unit="percentunit",
        ),
        _panel(
            g,
            "timeseries",
            "Mouth still while the voice speaks (seconds per 5 minutes)",
            [
                (
                    f"sum by (room, participant) (increase({n.LIP_STILL_SECONDS}{c.sel()}[5m]))",
                    "{{room}} / {{participant}}",
                )
            ],
        ),
        _panel(
            g,
            "timeseries",
            "Face seen (share of frames, 10m): lip-still is partly blind below 50 %",
            [(face_seen_share(c), "{{room}} / {{participant}}")],
            unit="percentunit",
        ),
        _panel(
            g,
            "timeseries",
            "Speaking windows without a lip-sync offset (share, 15m): blind above 90 %",
            [(unmeasured_share(c), "{{room}} / {{participant}}")],
            unit="percentunit",
        ),
        _panel(
            g,
            "timeseries",
            "Response p90: user stops talking -> avatar answers (--turns)",
            [(response_p90(c), "{{room}} / {{participant}}")],
            w=24,
            unit="s",
        ),
        _panel(
            g,
            "timeseries",
            "syncmon's own lag behind the picture, per monitor process (its host's CPU)",
            [(f"max by (instance) ({n.MONITOR_BACKLOG}{c.sel()})", "{{instance}}")],
            w=16,
            unit="s",
        ),
        _panel(
            g,
            "timeseries",
            "Monitors reporting themselves full (1: behind their pictures, refusing rooms)",
            [(f"max by (instance) ({n.OVERLOADED}{c.sel()})", "{{instance}}")],
            w=8,
        ),
        _panel(
            g,
            "timeseries",
            "Lip-sync offset (content) per avatar",
            [(f"{n.AV_OFFSET}{content}", "{{room}} / {{participant}}")],
            w=24,
            unit="s",
            extra={"defaults": _offset_thresholds()},
        ),
    ]
    return _dashboard("syncmon-overview", "syncmon / Overview", panels, [_var_datasource()])


def room(c: MixinConfig) -> dict[str, Any]:
    g = _Grid()
    rp = c.sel('room="$room"', 'participant="$participant"')
    panels = [
        *_offset_panels(g, rp),
        *_video_panels(g, rp),
        *_receiver_panels(g, rp),
        *_offset_source_panels(g, c, rp),
        *_turn_panels(g, rp),
        *_agent_panels(g, c, w=12),
    ]
    room_sel = '{room="$room"}'
    variables = [
        _var_datasource(),
        _var_query("room", f"label_values({n.ROOM_CONNECTED}, room)", "Room"),
        _var_query(
            "participant", f"label_values({n.VIDEO_FRAMES}{room_sel}, participant)", "Avatar"
        ),
    ]
    return _dashboard("syncmon-room", "syncmon / Room", panels, variables)


def _with(sel: str, matcher: str) -> str:
    """``sel`` ({...}) with one more matcher."""
    return "{" + ",".join(m for m in (sel.strip("{}"), matcher) if m) + "}"


def _turn_panels(g: _Grid, rp: str) -> list[dict[str, Any]]:
    """Turns (--turns): how fast the avatar answers, and goes quiet when talked over."""

    def q(p: float, name: str, sel: str, by: str = "") -> str:
        return f"histogram_quantile({p}, sum by ({by}le) (rate({name}_bucket{sel}[5m])))"

    voice = _with(rp, 'path="audio"')
    return [
        _panel(
            g,
            "timeseries",
            "Response: user stops talking -> avatar answers (voice / mouth)",
            [
                (q(0.5, n.TURN_RESPONSE, rp, "path, "), "p50 {{path}}"),
                (q(0.9, n.TURN_RESPONSE, rp, "path, "), "p90 {{path}}"),
            ],
            w=12,
            unit="s",
        ),
        _panel(
            g,
            "timeseries",
            "Turns and interruptions per 5 minutes",
            [
                (f"increase({n.TURN_RESPONSE}_count{voice}[5m])", "answered turns"),
                (f"increase({n.INTERRUPTIONS}{rp}[5m])", "interruptions"),
            ],
            w=6,
        ),
        _panel(
            g,
            "timeseries",
            "Talked over: until the avatar goes quiet",
            [(q(0.9, n.INTERRUPTION_STOP, rp), "p90"), (q(0.5, n.INTERRUPTION_STOP, rp), "p50")],
            w=6,
            unit="s",
        ),
    ]


def _offset_panels(g: _Grid, rp: str) -> list[dict[str, Any]]:
    """The lip-sync offset per method, its confidence and its drift."""
    return [
        _panel(
            g,
            "timeseries",
            "Lip-sync offset per method (t_video - t_audio)",
            [(f"{n.AV_OFFSET}{rp}", "{{method}}")],
            w=24,
            h=9,
            unit="s",
            extra={"defaults": _offset_thresholds()},
        ),
        _panel(
            g,
            "timeseries",
            "Estimate confidence",
            [(f"{n.AV_OFFSET_CONFIDENCE}{rp}", "{{method}}")],
            unit="percentunit",
        ),
        _panel(g, "timeseries", "Drift", [(f"{n.AV_DRIFT}{rp} * 1000", "ms per minute")]),
        _panel(
            g,
            "timeseries",
            "Mouth still while the voice speaks, per 5 minutes",
            [
                (f"increase({n.LIP_STILL_SECONDS}{rp}[5m])", "speaking seconds"),
                (f"increase({n.LIP_STILL_EPISODES}{rp}[5m])", "episodes"),
            ],
        ),
        _panel(
            g,
            "timeseries",
            "Face seen (share of frames, 5m): where it is not, lip-still is judged by the voice",
            [
                (
                    f"rate({n.FACE_FRAMES}{rp}[5m]) / rate({n.VIDEO_FRAMES}{rp}[5m])",
                    "face seen",
                )
            ],
            unit="percentunit",
        ),
        _panel(
            g,
            "timeseries",
            "Content windows per 5 minutes: where the voice speaks and no offset comes, "
            "lip-sync is not measured",
            [
                (
                    f'increase({n.CONTENT_WINDOWS}{{{rp[1:-1]},result="{r}"}}[5m])',
                    label,
                )
                for r, label in (
                    ("measured", "measured"),
                    ("unmeasured", "speaking, no offset"),
                    ("no_speech", "no speech"),
                )
            ],
        ),
    ]


def _video_panels(g: _Grid, rp: str) -> list[dict[str, Any]]:
    """The avatar's frames as they arrive: rate, jitter, freezes, drops, intervals."""
    return [
        _panel(
            g,
            "timeseries",
            "Frame rate",
            [(f"{n.VIDEO_FPS}{rp}", "fps"), (f"{n.VIDEO_HARMONIC_FPS}{rp}", "harmonic fps")],
        ),
        _panel(
            g,
            "timeseries",
            "Frame jitter (RFC 3550)",
            [(f"{n.VIDEO_JITTER}{rp}", "jitter")],
            unit="s",
        ),
        _panel(
            g,
            "timeseries",
            "Freezes and drops per minute",
            [
                (f"increase({n.VIDEO_FREEZES}{rp}[1m])", "freezes"),
                (f"increase({n.VIDEO_DROPPED}{rp}[1m])", "dropped frames"),
                (f"increase({n.VIDEO_DUPLICATED}{rp}[1m])", "duplicated frames"),
            ],
        ),
        _panel(
            g,
            "timeseries",
            "Frame interval p50 / p99",
            [
                (
                    f"histogram_quantile(0.5, sum by (le) (rate({n.VIDEO_FRAME_INTERVAL}_bucket{rp}"
                    "[1m])))",
                    "p50",
                ),
                (
                    f"histogram_quantile(0.99, sum by (le) "
                    f"(rate({n.VIDEO_FRAME_INTERVAL}_bucket{rp}[1m])))",
                    "p99",
                ),
            ],
            unit="s",
        ),
    ]


def _receiver_panels(g: _Grid, rp: str) -> list[dict[str, Any]]:
    """The monitor's receiver: RTP, jitter buffers, audio gaps, tracks, viewer sync."""
    return [
        _panel(g, "timeseries", "RTP jitter", [(f"{n.RTP_JITTER}{rp}", "{{kind}}")], w=8, unit="s"),
        _panel(
            g,
            "timeseries",
            "RTP packets lost per minute",
            [(f"increase({n.RTP_PACKETS_LOST}{rp}[1m])", "{{kind}}")],
            w=8,
        ),
        _panel(
            g,
            "timeseries",
            "Jitter buffer delay",
            [(f"{n.JITTER_BUFFER_DELAY}{rp}", "{{kind}}")],
            w=8,
            unit="s",
        ),
        _panel(
            g,
            "timeseries",
            "Audio gaps and concealment per minute",
            [
                (f"increase({n.AUDIO_GAP_SECONDS}{rp}[1m])", "gap seconds"),
                (f"increase({n.AUDIO_CONCEALED_SAMPLES}{rp}[1m])", "concealed samples"),
            ],
        ),
        _panel(g, "state-timeline", "Tracks up", [(f"{n.TRACK_UP}{rp}", "{{kind}}")]),
        _panel(
            g,
            "state-timeline",
            "Viewers lip-sync (1: one stream, sync_streams; 0: as received)",
            [(f"{n.VIEWER_SYNC}{rp}", "{{participant}}")],
        ),
        _panel(
            g,
            "stat",
            "Avatar start-up (join to first sound / first picture)",
            [(f"{n.AVATAR_STARTUP}{rp}", "{{participant}} {{stage}}")],
            unit="s",
        ),
        _panel(
            g,
            "timeseries",
            "syncmon's own lag behind the picture (its host's CPU), and frames it shed",
            [
                (f"{n.MONITOR_BACKLOG}{rp}", "lag (s)"),
                (f"increase({n.MONITOR_FRAMES_SHED}{rp}[1m])", "shed per minute"),
            ],
            w=24,
        ),
    ]


def _offset_source_panels(g: _Grid, c: MixinConfig, rp: str) -> list[dict[str, Any]]:
    """How far off each method is over time, and where the offset comes from: the avatar's
    model, the transport, the sender's pacing (needs the instrumented agent's series)."""
    panels = [
        _panel(
            g,
            "timeseries",
            "|offset| p90 by method (5m)",
            [
                (
                    f"histogram_quantile(0.9, sum by (le, method) (rate({n.AV_OFFSET_ABS}_bucket"
                    f"{rp}[5m])))",
                    "{{method}}",
                )
            ],
            w=24,
            unit="s",
        ),
    ]
    model, transport = offset_decomposition(c, 'room="$room"', 'participant="$participant"')
    panels.append(
        _panel(
            g,
            "timeseries",
            "Where the offset comes from",
            [
                (model, "avatar model (content - timestamp)"),
                (transport, "transport (timestamp - sender skew)"),
                (f"{n.AGENT_SENDER_SKEW}{_agent_sel(c)}", "sender pacing skew"),
            ],
            w=24,
            unit="s",
        )
    )
    return panels


def agent(c: MixinConfig) -> dict[str, Any]:
    """The avatar worker's pipeline from syncmon.instrument's metrics."""
    g = _Grid()
    a = _agent_sel(c)
    panels = [
        _panel(
            g,
            "stat",
            "Frames generated per second",
            [(f"sum(rate({n.AGENT_FRAMES}{a}[1m]))", "fps")],
            w=6,
            h=5,
        ),
        _panel(
            g,
            "stat",
            "Utterances per minute",
            [(f"sum(increase({n.AGENT_UTTERANCES}{a}[1m]))", "utterances")],
            w=6,
            h=5,
        ),
        _panel(
            g,
            "stat",
            "Sender A/V skew",
            [(f"{n.AGENT_SENDER_SKEW}{a}", "skew")],
            w=6,
            h=5,
            unit="s",
        ),
        _panel(
            g,
            "stat",
            "Processing time p95 (5m)",
            [
                (
                    f"histogram_quantile(0.95, sum by (le) "
                    f"(rate({n.AGENT_PROCESSING_TIME}_bucket{a}[5m])))",
                    "p95",
                )
            ],
            w=6,
            h=5,
            unit="s",
        ),
        *_agent_panels(g, c, w=12),
        _panel(
            g,
            "timeseries",
            "|sender skew| p50 / p95 (5m)",
            [
                (
                    f"histogram_quantile({p}, sum by (le) "
                    f"(rate({n.AGENT_SENDER_SKEW_ABS}_bucket{a}[5m])))",
                    f"p{int(p * 100)}",
                )
                for p in (0.5, 0.95)
            ],
            unit="s",
        ),
        _panel(
            g,
            "table",
            "Runtime queue sizes as configured",
            [(f"max by (queue) ({n.AGENT_RUNTIME_QUEUE_CAPACITY}{a})", "{{queue}}")],
            extra={"options": {"showHeader": True}},
        ),
    ]
    variables = [
        _var_datasource(),
        _var_query("room", f"label_values({n.AGENT_FRAMES}, {n.AGENT_LABEL_ROOM})", "Room"),
        _var_query(
            "participant",
            f'label_values({n.AGENT_FRAMES}{{{n.AGENT_LABEL_ROOM}="$room"}}, '
            f"{n.AGENT_LABEL_PARTICIPANT})",
            "Avatar",
        ),
    ]
    return _dashboard("syncmon-agent", "syncmon / Agent pipeline", panels, variables)


def dashboards(c: MixinConfig | None = None) -> dict[str, dict[str, Any]]:
    c = c or MixinConfig()
    return {
        "syncmon-overview.json": overview(c),
        "syncmon-room.json": room(c),
        "syncmon-agent.json": agent(c),
    }
