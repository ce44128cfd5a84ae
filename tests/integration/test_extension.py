"""The seams, proven from outside the package: an exchange adapter and a detector written
here, in the test module alone, run live against a local WebSocket server and in replay,
through the same registries a real plug-in uses (``EXCHANGES``, ``DETECTORS``).

The exchange speaks Coinbase Exchange's ``matches`` channel (real recorded frames): a
subscribe message after connecting, ``BTC-USD``-style products, ``side`` the maker's.
The detector flags trades of large notional value, with a signal type of its own.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.server import ServerConnection, serve

from spikewatch.config import load_settings
from spikewatch.core.decimal import SCALE, parse_units, units_to_float
from spikewatch.core.detectors import DETECTORS
from spikewatch.core.frames import (
    Capabilities,
    Control,
    FrameMarks,
    MalformedFrame,
    ParsedFrames,
)
from spikewatch.core.kernel import GapPolicy
from spikewatch.core.model import Side, Signal, Trade, decode_signal, iso_utc
from spikewatch.core.symbolsets import SymbolInfo
from spikewatch.engine import Engine
from spikewatch.exchanges import EXCHANGES
from spikewatch.exchanges.base import RestRequest, SimulatorCodec
from spikewatch.ingest.backoff import Backoff
from spikewatch.replay.readers import read_trades
from spikewatch.replay.runner import replay
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.wiring import build_kernel

from helpers import wait_until

FIXTURE = "coinbase-exchange-match.cryptofeed-2021-04-17.jsonl"
NOTIONAL = Decimal(1000)  # quote units: the toy detector's threshold
QUOTES = ("USD", "BTC", "EUR", "GBP")

pytestmark = pytest.mark.slow


# -- the adapter ---------------------------------------------------------------------------


class _Match(msgspec.Struct):
    type: str
    trade_id: int
    side: str  # the maker's side
    size: str
    price: str
    product_id: str
    time: str


_decode = msgspec.json.Decoder(_Match).decode


def canonical(product: str) -> str:
    """``SKL-USD`` -> ``SKLUSD``: spikewatch's symbols are letters and digits."""
    return product.replace("-", "")


def product(symbol: str) -> str:
    """``SKLUSD`` -> ``SKL-USD`` (for the subscribe request)."""
    quote = next(q for q in QUOTES if symbol.endswith(q))
    return f"{symbol[: -len(quote)]}-{quote}"


class ToyCoinbase:
    """A Coinbase-Exchange-like venue, as an adapter outside the package would be."""

    name = "toy-coinbase"
    default_ws_url = "ws://127.0.0.1:1"
    default_rest_url = "http://127.0.0.1:1"
    capabilities = Capabilities(consecutive_ids=True, fetch_by_id=False, recent_trades=False)
    frame_marks = FrameMarks(b'match"', b'"type":"match"')  # in match and last_match

    def __init__(self, *, api_key: str = "") -> None:
        self.api_key = api_key

    def stream_url(self, base_url: str, symbols: Sequence[str]) -> str:
        return base_url.rstrip("/") + "/feed"

    def subscribe(self, symbols: Sequence[str], request_id: int) -> bytes:
        products = [product(s) for s in symbols]
        return json.dumps(
            {"type": "subscribe", "product_ids": products, "channels": ["matches"]}
        ).encode()

    def unsubscribe(self, symbols: Sequence[str], request_id: int) -> bytes:
        products = [product(s) for s in symbols]
        return json.dumps({"type": "unsubscribe", "product_ids": products}).encode()

    def greeting(self, symbols: Sequence[str]) -> list[bytes]:
        return [self.subscribe(symbols, 1)]

    def heartbeat(self) -> bytes | None:
        return None

    def parse_batch(self, frames: Sequence[bytes]) -> ParsedFrames:
        return ParsedFrames.collect(self._parse(frame) for frame in frames)

    def _parse(self, frame: bytes) -> Trade | Control | MalformedFrame:
        try:
            match = _decode(frame)
        except msgspec.DecodeError:
            return Control.IGNORED  # subscriptions, heartbeats...
        try:
            moment = datetime.fromisoformat(match.time.replace("Z", "+00:00"))
            return Trade(
                self.name,
                canonical(match.product_id),
                match.trade_id,
                parse_units(match.price),
                parse_units(match.size),
                int(moment.timestamp()) * 1_000_000 + moment.microsecond,
                Side.BUY if match.side == "sell" else Side.SELL,  # maker sold: taker bought
            )
        except ValueError as exc:
            return MalformedFrame("bad_value", str(exc))

    def recent_trades(self, symbol: str, limit: int) -> RestRequest | None:
        return None

    def trades_from_id(self, symbol: str, from_id: int, limit: int) -> RestRequest | None:
        return None

    def parse_rest_trades(self, body: bytes, symbol: str) -> list[Trade]:
        raise MalformedFrame("bad_rest_reply", "no REST here")

    def listing(self) -> RestRequest | None:
        return None  # no listing: named products are streamed as given, ALL cannot be

    def parse_listing(self, body: bytes) -> list[SymbolInfo]:
        raise MalformedFrame("bad_rest_reply", "no REST here")

    def simulator_codec(self) -> SimulatorCodec:
        raise NotImplementedError("served by the test's own server")


# -- the detector ---------------------------------------------------------------------------


class LargeNotionalSignal(Signal, frozen=True, tag="LargeNotional"):
    """A trade whose price x quantity reached the detector's threshold."""

    notional: float
    minimum: float


class LargeNotional:
    """Fires on every trade worth at least ``threshold`` quote units (no window)."""

    name = "large_notional"

    def __init__(self, window: int, threshold: Decimal) -> None:
        self.threshold = threshold
        self.key = f"large_notional-x{threshold.normalize():f}"
        self._limit = int(threshold * SCALE * SCALE)

    def update(self, trade: Trade) -> Signal | None:
        value = trade.price * trade.qty  # 1e-16 quote units, exact
        if value < self._limit:
            return None
        return LargeNotionalSignal(
            id=f"{trade.exchange}:{trade.symbol}:{self.key}:{trade.trade_id}",
            exchange=trade.exchange,
            symbol=trade.symbol,
            detector=self.key,
            trade_id=trade.trade_id,
            timestamp=iso_utc(trade.time_us),
            time_us=trade.time_us,
            price=units_to_float(trade.price),
            volume=units_to_float(trade.qty),
            quote_volume=value / SCALE / SCALE,
            side=trade.side.value,
            notional=value / SCALE / SCALE,
            minimum=float(self.threshold),
        )

    def snapshot(self) -> dict[str, Any]:
        return {"key": self.key}

    def restore(self, state: dict[str, Any]) -> None:
        pass

    def reset(self) -> None:
        pass


# -- the expected outcome, from the frames directly -----------------------------------------


def expected(frames: list[bytes], symbols: set[str]) -> list[tuple[str, int, str]]:
    """(symbol, trade id, taker side) of each match worth >= NOTIONAL, per the recording."""
    out = []
    for frame in frames:
        doc = json.loads(frame)
        symbol = doc["product_id"].replace("-", "")
        if symbol in symbols and Decimal(doc["price"]) * Decimal(doc["size"]) >= NOTIONAL:
            taker = "buy" if doc["side"] == "sell" else "sell"
            out.append((symbol, doc["trade_id"], taker))
    return out


@pytest.fixture
def frames(fixtures_dir: Path) -> list[bytes]:
    return [line for line in (fixtures_dir / FIXTURE).read_bytes().splitlines() if line]


@pytest.fixture
def plugged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the adapter and the detector as a plug-in would: no package change."""
    monkeypatch.setitem(EXCHANGES, ToyCoinbase.name, ToyCoinbase)
    monkeypatch.setitem(
        DETECTORS, "large_notional", lambda params: LargeNotional(params.window, params.threshold)
    )


def settings_for(ws_url: str, db: str, folder: Path) -> Any:
    """What a user's TOML file would say to run the plug-ins."""
    path = folder / "spikewatch.toml"
    path.write_text(
        'exchange = "toy-coinbase"\n'
        'symbols = ["SKLUSD", "DASHBTC"]\n'
        f'ws_url = "{ws_url}"\n'
        f'db = "{db}"\n'
        "[detectors.big]\n"
        'kind = "large_notional"\n'
        f"threshold = {NOTIONAL}\n"
        "[detectors.volume_spike]\n"
        "window = 5\n"
        "threshold = 3\n",
        encoding="utf-8",
    )
    return load_settings(env={}, config_path=path)


# -- a local Coinbase-like server -----------------------------------------------------------


class Server:
    """Waits for a subscribe request, then sends the recorded matches of its products."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handle(self, ws: ServerConnection) -> None:
        request = json.loads(await ws.recv())
        self.requests.append(request)
        wanted = set(request["product_ids"])
        for frame in self.frames:
            if json.loads(frame)["product_id"] in wanted:
                await ws.send(frame.decode())
        await ws.wait_closed()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(self._handle, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(5)


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.usefixtures("plugged")
def test_a_plugged_in_exchange_and_detector_run_live_against_a_local_server(
    frames: list[bytes], tmp_path: Path
) -> None:
    with Server(frames) as server:
        settings = settings_for(f"ws://127.0.0.1:{server.port}", str(tmp_path / "toy.db"), tmp_path)
        store = SQLiteSignalStore(settings.db)
        engine = Engine(settings, store, backoff=Backoff(first=0.05, cap=0.2))
        got: list[Signal] = []
        engine.add_listener(got.append)
        engine.start()
        try:
            want = expected(frames, {"SKLUSD", "DASHBTC"})
            assert want  # the recording holds large trades of both products
            wait_until(  # every recorded match of the two products handled
                lambda: [v.trades for v in engine.status().symbols.values()] == [53, 16], 20
            )
            wait_until(
                lambda: len([s for s in got if isinstance(s, LargeNotionalSignal)]) >= len(want)
            )
            big = [s for s in got if isinstance(s, LargeNotionalSignal)]
            assert [(s.symbol, s.trade_id, s.side) for s in big] == want
            assert all(s.notional >= 1000 and s.exchange == "toy-coinbase" for s in big)
            assert server.requests == [
                {
                    "type": "subscribe",
                    "product_ids": ["SKL-USD", "DASH-BTC"],
                    "channels": ["matches"],
                }
            ]
            status = engine.status()
            assert status.exchange == "toy-coinbase"
            assert status.symbols["SKLUSD"].trades == 53
            assert status.symbols["DASHBTC"].trades == 16
            assert status.symbols["SKLUSD"].gap_records == 0  # consecutive ids, no holes
            assert engine.flush(5)
        finally:
            engine.stop()
        # stored as its own type, decoded back as it: a second detector, no change to Signal
        stored = store.page(limit=1000).signals
        assert {type(s) for s in stored} >= {LargeNotionalSignal}
        assert sorted(s.id for s in stored) == sorted(s.id for s in got)
        assert all(decode_signal(msgspec.json.encode(s)) == s for s in stored)
        store.close()


@pytest.mark.usefixtures("plugged")
def test_the_same_adapter_and_detector_replay_a_recording_to_the_same_signals(
    frames: list[bytes], fixtures_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for("ws://127.0.0.1:1", ":memory:", tmp_path)
    exchange = ToyCoinbase()
    kernel = build_kernel(settings, venues=(exchange,), gap_policy=GapPolicy.RESET, bars=False)
    got: list[Signal] = []
    summary = replay(
        read_trades([fixtures_dir / FIXTURE], fmt="frames", exchange=exchange),
        kernel,
        got.append,
        symbols=frozenset({"SKLUSD", "DASHBTC"}),
    )
    big = [s for s in got if isinstance(s, LargeNotionalSignal)]
    assert [(s.symbol, s.trade_id, s.side) for s in big] == expected(frames, {"SKLUSD", "DASHBTC"})
    assert summary.trades == 53 + 16
    assert summary.lost_trades == 0
