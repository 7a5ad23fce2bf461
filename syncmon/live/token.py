"""Tokens syncmon mints for itself with livekit-api: hidden, subscribe-only, one room."""

from __future__ import annotations

import datetime

from livekit import api

from .config import DEFAULT_TOKEN_TTL


def monitor_token(
    *,
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    ttl: datetime.timedelta = DEFAULT_TOKEN_TTL,
) -> str:
    """A JWT that lets a hidden participant subscribe in ``room`` and nothing else."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        hidden=True,
        can_subscribe=True,
        can_publish=False,
        can_publish_data=False,
        can_update_own_metadata=False,
    )
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name("syncmon")
        .with_grants(grants)
        .with_ttl(ttl)
        .to_jwt()
    )


def publisher_token(
    *,
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    agent: bool = True,
    attributes: dict[str, str] | None = None,
) -> str:
    """A token for the reference publisher (kind agent, so that a monitor finds it)."""
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=False)
    tok = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name("syncmon reference avatar")
        .with_grants(grants)
        .with_ttl(datetime.timedelta(hours=6))
    )
    if agent:
        tok = tok.with_kind("agent")
    if attributes:
        tok = tok.with_attributes(attributes)
    return tok.to_jwt()
