"""Binance's connection and request limits, counted the way Binance counts them, for the
simulator (:mod:`spikewatch.replay.simulator`).

The numbers come from the venue's simulator codec (``exchange.simulator_codec()``: the
Binance codecs carry them with their sources) and can be lowered per simulator through
:class:`~spikewatch.replay.simulator.Faults` so that tests reach them in a handful of
calls. The accounting here is pure: every check takes the time (``now``, seconds on any
monotonic clock) from its caller; only :class:`LimitedConnection` touches a socket.

What is enforced, and how the simulator answers (Binance's own words where it has any):

* **Streams per connection** (spot and USD-M: 1024). A connection whose URL names more, or
  whose ``SUBSCRIBE`` would take it past the limit, is closed with 1008. The docs say only
  that a connection can listen to at most 1024 streams; the older wording was "if a user
  attempts to listen to more streams, the connection will be disconnected", which is what
  the simulator does (no error reply is documented).
* **Incoming messages per second and connection** (spot 5, USD-M 10): pings, pongs and
  JSON requests count. "A connection that goes beyond the limit will be disconnected":
  closed with 1008 ``Too many requests`` (the close Binance sends, as client libraries
  report it).
* **Connection attempts per 5 minutes and IP** (spot: 300): every handshake counts, a
  refused one too; past the limit the handshake is answered HTTP 429. The USD-M market
  stream docs state no such limit, so none is enforced there.
* **REST request weight per rolling minute and IP** (spot 6,000, USD-M 2,400), each
  endpoint at its documented weight, reported in ``X-MBX-USED-WEIGHT-1M``. A request that
  would pass the limit is answered 429 with ``Retry-After`` (seconds until enough weight
  has left the window) and is not charged. "Repeatedly violating rate limits and/or
  failing to back off after receiving 429s will result in an automated IP ban (HTTP status
  418)", "from 2 minutes to 3 days": requests sent while a 429's ``Retry-After`` runs are
  refused with 429 again and counted; the :data:`BAN_AFTER`-th such request bans the IP
  for 2 minutes (doubling with every further ban, at most 3 days), and every request
  while banned is answered 418 with ``Retry-After`` = the seconds left.

Sources: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
("WebSocket Limits"), https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits
(429, 418, ``Retry-After``, bans from 2 minutes to 3 days),
https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
(10 messages a second, 1024 streams), the endpoint pages for the weights (cited in
:mod:`spikewatch.exchanges.binance.codec`), and the spot error codes page (-1003 and its
messages).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Event

#: Requests ignored while a 429's Retry-After runs before the IP is banned (418).
BAN_AFTER = 3
#: The first ban, in seconds; each further ban doubles it, up to :data:`MAX_BAN_S`.
FIRST_BAN_S = 120.0
MAX_BAN_S = 3 * 24 * 3600.0
#: The window of the connection-attempt limit, in seconds.
CONNECT_WINDOW_S = 300.0
#: The window of the request-weight limit, in seconds.
WEIGHT_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class VenueLimits:
    """The limits one simulator enforces (0: not enforced)."""

    max_streams: int = 0  # streams per connection
    max_messages_per_s: int = 0  # incoming messages per second and connection
    max_connects_per_5min: int = 0  # connection attempts per 5 minutes and IP
    weight_limit: int = 0  # REST request weight per minute and IP
    #: REST path -> its request weight; other paths weigh :attr:`default_weight`
    weights: Mapping[str, int] = field(default_factory=dict)
    default_weight: int = 1
    ban_after: int = BAN_AFTER

    @classmethod
    def of(cls, codec: object, **overrides: int) -> VenueLimits:
        """The limits a codec announces (a codec without them enforces none), with the
        non-zero ``overrides`` (``max_streams=10``...) in their place."""
        weights = getattr(codec, "rest_weights", {})
        limits = cls(
            max_streams=int(getattr(codec, "max_streams", 0)),
            max_messages_per_s=int(getattr(codec, "max_messages_per_s", 0)),
            max_connects_per_5min=int(getattr(codec, "max_connects_per_5min", 0)),
            weight_limit=int(getattr(codec, "rest_weight_limit", 0)),
            weights=dict(weights) if isinstance(weights, Mapping) else {},
        )
        chosen = {name: value for name, value in overrides.items() if value}
        if not chosen:
            return limits
        return cls(
            max_streams=chosen.get("max_streams", limits.max_streams),
            max_messages_per_s=chosen.get("max_messages_per_s", limits.max_messages_per_s),
            max_connects_per_5min=chosen.get("max_connects_per_5min", limits.max_connects_per_5min),
            weight_limit=chosen.get("weight_limit", limits.weight_limit),
            weights=limits.weights,
            ban_after=chosen.get("ban_after", limits.ban_after),
        )

    def weight(self, path: str) -> int:
        """The request weight of a REST call to ``path``."""
        return self.weights.get(path, self.default_weight)


class RateWindow:
    """Events in a rolling window of ``window`` seconds, at most ``limit`` of them."""

    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._times: deque[float] = deque()

    def hit(self, now: float) -> bool:
        """Count one event at ``now``; False when it is one more than the limit allows
        (it is counted all the same: an attempt is an attempt)."""
        times = self._times
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        return not self.limit or len(times) <= self.limit


class ConnectGate:
    """Connection attempts per IP in a rolling 5 minutes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_ip: dict[str, RateWindow] = {}

    def admit(self, ip: str, now: float) -> bool:
        """Count an attempt from ``ip``; False when it is past the limit."""
        if not self.limit:
            return True
        window = self._by_ip.setdefault(ip, RateWindow(self.limit, CONNECT_WINDOW_S))
        return window.hit(now)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a REST request gets: ``status`` 200 (go ahead), 429 or 418; the weight used
    in the window after it; seconds to wait (``Retry-After``) when refused."""

    status: int
    used: int
    retry_after: int = 0
    banned_until_ms: int = 0


@dataclass(slots=True)
class _IpWeight:
    spent: deque[tuple[float, int]] = field(default_factory=deque)
    used: int = 0
    retry_at: float = 0.0  # the end of the last 429's Retry-After
    ignored: int = 0  # requests sent before retry_at since the last 429
    banned_until: float = 0.0
    bans: int = 0


class WeightLedger:
    """REST request weight per IP in a rolling minute, with 429s and 418 bans."""

    def __init__(self, limit: int, ban_after: int = BAN_AFTER) -> None:
        self.limit = limit
        self.ban_after = max(1, ban_after)
        self._by_ip: dict[str, _IpWeight] = {}

    def charge(self, ip: str, weight: int, now: float, wall_ms: int = 0) -> Verdict:
        """Charge ``weight`` to ``ip`` at ``now`` if the limit allows it (``wall_ms``:
        the wall clock, only to date a ban in its message)."""
        state = self._by_ip.setdefault(ip, _IpWeight())
        spent = state.spent
        while spent and spent[0][0] <= now - WEIGHT_WINDOW_S:
            state.used -= spent.popleft()[1]
        if now < state.banned_until:
            left = state.banned_until - now
            return Verdict(418, state.used, math.ceil(left), wall_ms + int(left * 1000))
        if self.limit and now < state.retry_at:
            state.ignored += 1
            if state.ignored >= self.ban_after:  # it does not back off: banned
                length = min(FIRST_BAN_S * 2**state.bans, MAX_BAN_S)
                state.bans += 1
                state.banned_until, state.ignored, state.retry_at = now + length, 0, 0.0
                return Verdict(418, state.used, math.ceil(length), wall_ms + int(length * 1000))
            return Verdict(429, state.used, max(1, math.ceil(state.retry_at - now)))
        if self.limit and state.used + weight > self.limit:
            # wait until enough of the window's weight has left it
            free, wait = state.used + weight - self.limit, WEIGHT_WINDOW_S
            for at, spent_weight in spent:
                free -= spent_weight
                if free <= 0:
                    wait = at + WEIGHT_WINDOW_S - now
                    break
            retry = max(1, math.ceil(wait))
            state.retry_at, state.ignored = now + retry, 0
            return Verdict(429, state.used, retry)
        spent.append((now, weight))
        state.used += weight
        return Verdict(200, state.used)


def counts_as_message(frame: Frame) -> bool:
    """A frame Binance counts as one incoming message: a ping, a pong, or the last frame of
    a text or binary message (a fragmented message is one message)."""
    if frame.opcode in (Opcode.PING, Opcode.PONG):
        return True
    return frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT) and frame.fin


class LimitedConnection(ServerConnection):
    """A server connection that counts its incoming messages (pings and pongs too, which
    never reach the handler) and fails itself with 1008 past ``meter``'s limit.

    The simulator sets :attr:`meter` and :attr:`on_violation` in its ``process_request``
    (before any frame can arrive); without a meter nothing is counted."""

    meter: RateWindow | None = None
    on_violation: Callable[[], None] | None = None
    clock: Callable[[], float] | None = None
    violated = False

    def process_event(self, event: Event) -> None:
        """Count frames after the handshake; past the limit, close and ignore the rest."""
        if self.request is not None and isinstance(event, Frame):
            if self.violated:
                return
            meter, clock = self.meter, self.clock
            counted = meter is not None and clock is not None and counts_as_message(event)
            if counted and meter is not None and clock is not None and not meter.hit(clock()):
                self.violated = True
                if self.on_violation is not None:
                    self.on_violation()
                # Binance closes such a connection: "Too many requests" (1008)
                self.protocol.fail(CloseCode.POLICY_VIOLATION, "Too many requests")
                self.send_data()
                return
        super().process_event(event)
