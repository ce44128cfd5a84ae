"""Connecting a role to NATS: one clear error when the server is not there."""

from __future__ import annotations

import asyncio
import logging

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

log = logging.getLogger(__name__)


class BusUnavailable(RuntimeError):
    """NATS (with JetStream) does not answer at the configured URL; the message says what
    to do."""


async def connect_bus(url: str, *, wait_s: float = 5.0, name: str = "spikewatch") -> Client:
    """A connection to ``url`` whose JetStream answers; BusUnavailable otherwise. Once up,
    the connection reconnects by itself (a restarted server), for ever."""

    connected = False

    async def on_error(exc: Exception) -> None:
        if connected:  # (before, the one error below says it all)
            log.warning("NATS: %s", exc)

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                [u.strip() for u in url.split(",") if u.strip()],  # a cluster: all its nodes
                name=name,
                connect_timeout=min(wait_s, 2.0),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                allow_reconnect=True,
            ),
            wait_s,
        )
    except Exception as exc:  # (NoServersError, OSError, TimeoutError...)
        why = f"no answer within {wait_s:g} s" if isinstance(exc, TimeoutError) else exc
        raise BusUnavailable(
            f"cannot reach NATS at {url} ({why}); start nats-server "
            "with JetStream (nats-server -js) or point --nats-url / SPIKEWATCH_NATS_URL at it"
        ) from None
    try:
        await nc.jetstream().account_info()
    except Exception as exc:
        await nc.close()
        raise BusUnavailable(
            f"NATS at {url} has no JetStream ({type(exc).__name__}: {exc}); start it "
            "with -js (nats-server -js)"
        ) from None
    connected = True
    return nc


def jetstream(nc: Client) -> JetStreamContext:
    """The JetStream context of ``nc`` (API requests time out after 5 s)."""
    return nc.jetstream(timeout=5.0)
