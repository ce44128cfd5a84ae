"""What the simulator does wrong on purpose (:class:`Faults`), and what it counts
(:class:`SimulatorStats`); see :mod:`spikewatch.replay.simulator`."""

from __future__ import annotations

import msgspec

#: Frames the fault injector sends when asked for malformed ones (cycled in order).
BAD_FRAMES: tuple[bytes, ...] = (
    b"this is not json",
    b'{"stream":"btcusdt@trade","data":{"e":"trade"}}',
    b'{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"0","q":"1.0","T":1,"m":true}',
    b'{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"NaN","q":"1.0","T":1,"m":true}',
    b'{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1.0","q":"-3","T":1,"m":true}',
    b'{"e":"trade","E":1,"s":"BTCUSDT","t":"x","p":"1.0","q":"1","T":1,"m":true}',
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1.0",',
    b"[1, 2, 3]",
)

#: Pieces a fragmented message is cut into, one WebSocket frame each (``Faults.fragment_every``).
FRAGMENTS = 3


class Faults(msgspec.Struct, frozen=True, kw_only=True):
    """What the simulator does wrong on purpose (or legal but unusual, as fragmented
    messages: ``fragment_every=N`` sends every Nth trade frame as one text message cut
    into :data:`FRAGMENTS` pieces, each in its own WebSocket frame, a first one and
    continuations, which a client must put back together; websockets ends such a
    message with an empty final continuation frame)."""

    drop_every: int = 0  # close each connection abruptly after this many trade frames
    malformed_every: int = 0  # send a malformed frame before every Nth trade frame
    shutdown_after: int = 0  # announce serverShutdown after this many frames per connection
    shutdown_grace: float = 0.5  # seconds between the announcement and the close
    resend_on_connect: int = 0  # re-send this many already-played frames to a new connection
    huge_every: int = 0  # send a 2 MiB junk frame before every Nth trade frame
    fragment_every: int = 0  # send every Nth trade frame as a fragmented message
    stall_after: int = 0  # go silent (connection open, nothing sent) after N frames
    # statuses for the next historicalTrades calls (429, 418, 500, ...), then it works
    rest_failures: tuple[int, ...] = ()
    retry_after: int = 1  # Retry-After seconds on 429/418
    # 200 replies that cannot be used, for the next historicalTrades calls (after any
    # rest_failures), then it works: one of BAD_REPLIES' kinds each
    bad_replies: tuple[str, ...] = ()
    # Binance's limits lowered (0: the venue's own, from its codec; see replay/limits.py)
    max_streams: int = 0  # streams per connection (Binance: 1024)
    max_messages_per_s: int = 0  # incoming messages per second and connection (5; USD-M 10)
    max_connects_per_5min: int = 0  # connection attempts per 5 minutes and IP (spot 300)
    max_weight_per_min: int = 0  # REST request weight per minute and IP (6000; USD-M 2400)
    ban_after: int = 0  # requests ignoring a 429's Retry-After before a 418 ban (3)


class SimulatorStats(msgspec.Struct, frozen=True):
    """Counters of the simulator."""

    played: int
    total: int
    frames_sent: int
    connections: int
    open_connections: int
    drops: int
    malformed_sent: int
    fragmented_sent: int  # trade frames sent as fragmented messages
    shutdowns_sent: int
    rest_calls: int
    done: bool
    limit_disconnects: int = 0  # connections closed for sending too many messages
    refused_connections: int = 0  # handshakes refused past the connection-attempt limit
    too_many_streams: int = 0  # connections closed for asking for too many streams
    rate_limited: int = 0  # REST requests answered 429 for request weight
    banned: int = 0  # REST requests answered 418 (the IP banned)
    trading: int = 0  # symbols trading now


def fragments(payload: bytes, parts: int) -> list[bytes]:
    """``payload`` cut into ``parts`` pieces of about equal size, in order (the last ones
    empty when it is shorter than ``parts`` bytes: a continuation frame may be empty)."""
    step = -(-len(payload) // parts)
    return [payload[i * step : (i + 1) * step] for i in range(parts)]
