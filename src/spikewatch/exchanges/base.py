"""The shape every exchange adapter has: the one contract between a venue and the rest.

Everything venue-specific lives behind :class:`Exchange`: stream URLs, subscribe and
unsubscribe messages, application heartbeats, the pure batch parser, REST requests for
warm start and gap backfill (with their rate-limit weights), what the venue can and cannot
do (:class:`Capabilities`), and the codec the local simulator speaks it with. The ingest
client, the kernel, the store and the web layer know nothing else of a venue.

Adding a venue (Coinbase, Kraken, Bybit, OKX...) is one module that implements this
protocol; see docs/ARCHITECTURE.md, "Add an exchange".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from spikewatch.core.frames import (
    Capabilities,
    Control,
    FrameMarks,
    MalformedFrame,
    ParsedFrames,
)
from spikewatch.core.model import Trade
from spikewatch.core.symbolsets import SymbolInfo

__all__ = [
    "Capabilities",
    "Control",
    "Exchange",
    "FrameMarks",
    "MalformedFrame",
    "ParsedFrames",
    "RestRequest",
    "SimulatorCodec",
]


@dataclass(frozen=True, slots=True)
class RestRequest:
    """One REST call: the path after the base URL, its rate-limit weight (the venue's
    documented request weight: what the REST client's weight budget spends on it), extra
    headers."""

    path: str
    weight: int = 1
    headers: tuple[tuple[str, str], ...] = ()


class SimulatorCodec(Protocol):
    """How the local exchange simulator speaks a venue (tests and the demo run offline)."""

    #: path prefixes of the WebSocket endpoints, e.g. ``("/ws", "/stream")``
    ws_routes: tuple[str, ...]
    #: REST paths: recent trades, trades from an id, server time, ping, exchange info
    recent_trades_path: str
    historical_trades_path: str
    time_path: str
    ping_path: str
    exchange_info_path: str
    #: a header the historical look-up needs ("" when none), answered 401 without it
    api_key_header: str

    def stream_name(self, symbol: str) -> str:
        """The stream that carries ``symbol``'s trades, e.g. ``btcusdt@trade``."""
        ...

    def trade_frame(self, trade: Trade) -> bytes:
        """The raw (unwrapped) stream event of ``trade``."""
        ...

    def rest_trade(self, trade: Trade) -> dict[str, object]:
        """One row of a REST trades reply."""
        ...

    def shutdown_frame(self) -> bytes | None:
        """The venue's notice that a connection is about to be closed, if it has one."""
        ...


class Exchange(Protocol):
    """What the runtimes need of an exchange (one per venue and market)."""

    #: the name in settings, signals and the store, e.g. "binance", "binance-usdm"
    name: str
    capabilities: Capabilities

    @property
    def frame_marks(self) -> FrameMarks | None:
        """What tells its trade frames from its other frames in a recording, unparsed
        (None: the replay readers hand every line to the parser)."""
        ...

    default_ws_url: str
    default_rest_url: str

    def stream_url(self, base_url: str, symbols: Sequence[str]) -> str:
        """The WebSocket URL that streams the trades of ``symbols`` (upper-case)."""
        ...

    def subscribe(self, symbols: Sequence[str], request_id: int) -> bytes:
        """The message that adds the trade streams of ``symbols`` to a connection."""
        ...

    def unsubscribe(self, symbols: Sequence[str], request_id: int) -> bytes:
        """The message that removes them."""
        ...

    def greeting(self, symbols: Sequence[str]) -> list[bytes]:
        """Messages to send on every new connection before any data comes (subscribe
        requests, for venues whose URL cannot name the streams); empty for Binance."""
        ...

    def heartbeat(self) -> bytes | None:
        """An application-level keep-alive message to send periodically, or None when the
        WebSocket protocol's own pings are enough."""
        ...

    def parse_batch(self, frames: Sequence[bytes]) -> ParsedFrames:
        """Decode frames that arrived together; every frame lands in exactly one list of
        the result (a single frame is a batch of one). Pure and deterministic."""
        ...

    def recent_trades(self, symbol: str, limit: int) -> RestRequest | None:
        """The REST call for the latest ``limit`` trades (None: not available)."""
        ...

    def trades_from_id(self, symbol: str, from_id: int, limit: int) -> RestRequest | None:
        """The REST call for up to ``limit`` trades from id ``from_id`` on (None: gaps
        cannot be fetched, e.g. the endpoint needs an API key and none is configured)."""
        ...

    def parse_rest_trades(self, body: bytes, symbol: str) -> list[Trade]:
        """Trades of a REST reply, oldest first; raises :class:`MalformedFrame`."""
        ...

    def listing(self) -> RestRequest | None:
        """The REST call for the venue's listing of pairs, or None when it has none (then
        ``--symbols ALL`` cannot be resolved and named symbols are not checked)."""
        ...

    def parse_listing(self, body: bytes) -> list[SymbolInfo]:
        """The pairs of a listing reply with their status and assets; raises
        :class:`MalformedFrame`."""
        ...

    def simulator_codec(self) -> SimulatorCodec:
        """How the local simulator serves this venue."""
        ...
