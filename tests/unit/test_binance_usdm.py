"""Binance USD-M futures (``binance-usdm``): recorded futures frames and what the adapter
asks of the venue (routes, REST calls, weights, limits)."""

from __future__ import annotations

import csv
import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from spikewatch.core import accel
from spikewatch.core.model import Side, Trade
from spikewatch.exchanges import EXCHANGES
from spikewatch.exchanges.base import Control, MalformedFrame, RestRequest
from spikewatch.exchanges.binance import BinanceSpot, BinanceUsdm

FRAMES = "binance-usdm-BTCUSDT-trade-combined.hftbacktest-2024-08-08T2354Z_first-300.jsonl"
CSV = "binance-usdm-BTCUSDT-trades-2024-08-08T2354Z_first-300-rows.csv.gz"
OLDER_FRAMES = "binance-usdm-trade-combined.collect-binancefutures-2022-08-11.jsonl"


def frames_of(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def csv_rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def units(text: str) -> int:
    """Exact 1e-8 units of a decimal string, computed apart from the parser."""
    value = Decimal(text) * 10**8
    assert value == value.to_integral_value()
    return int(value)


def expected_trade(row: dict[str, str]) -> Trade:
    """The trade a data.binance.vision futures ``trades`` CSV row describes."""
    return Trade(
        "binance-usdm",
        "BTCUSDT",
        int(row["id"]),
        units(row["price"]),
        units(row["qty"]),
        int(row["time"]) * 1000,
        Side.SELL if row["is_buyer_maker"] == "true" else Side.BUY,
    )


def batch_trades(exchange: BinanceUsdm, frames: list[bytes]) -> list[Trade]:
    return exchange.parse_batch(frames).trade_list()


@pytest.fixture
def frames(fixtures_dir: Path) -> list[bytes]:
    """The first 300 recorded BTCUSDT futures ``@trade`` frames (combined form)."""
    return frames_of(fixtures_dir / FRAMES)


@pytest.fixture
def expected(fixtures_dir: Path) -> list[Trade]:
    """The same 300 trades, from the futures trades CSV."""
    return [expected_trade(row) for row in csv_rows(fixtures_dir / CSV)]


def with_data(frame: bytes, **changes: Any) -> bytes:
    """A recorded combined frame with fields of its event changed (``...`` removes one)."""
    doc = json.loads(frame)
    for key, value in changes.items():
        if value is ...:
            del doc["data"][key]
        else:
            doc["data"][key] = value
    return json.dumps(doc, separators=(",", ":")).encode()


# -- recorded frames ----------------------------------------------------------------------


def test_recorded_futures_frames_are_the_trades_of_the_csv(
    frames: list[bytes], expected: list[Trade]
) -> None:
    assert len(frames) == 300
    for frame in frames:
        event = json.loads(frame)["data"]
        assert event["X"] == "MARKET"
        assert "M" not in event
    exchange = BinanceUsdm()
    assert [exchange.parse(f) for f in frames] == expected


@pytest.mark.parametrize("numpy", [True, False], ids=["numpy", "pure"])
def test_a_batch_of_futures_frames_gives_what_frame_by_frame_gives(
    frames: list[bytes],
    expected: list[Trade],
    numpy: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if numpy and accel.np is None:
        pytest.skip("numpy is not installed")
    if numpy:
        monkeypatch.setattr(accel, "NUMPY_FROM", 0)  # numpy for every size of batch
    else:
        monkeypatch.setattr(accel, "np", None)
    parsed = BinanceUsdm().parse_batch(frames)
    assert (parsed.errors, parsed.controls) == ([], [])
    assert [(b.exchange, b.symbol) for b in parsed.batches] == [("binance-usdm", "BTCUSDT")]
    assert batch_trades(BinanceUsdm(), frames) == expected


def test_raw_futures_events_parse_as_their_combined_frames(frames: list[bytes]) -> None:
    head = b'{"stream":"btcusdt@trade","data":'
    raw = [f[len(head) : -1] for f in frames]
    exchange = BinanceUsdm()
    assert [exchange.parse(r) for r in raw] == [exchange.parse(f) for f in frames]
    assert batch_trades(exchange, raw) == batch_trades(exchange, frames)


def test_older_futures_recording_parses_with_the_futures_name(fixtures_dir: Path) -> None:
    frames = frames_of(fixtures_dir / OLDER_FRAMES)
    trades = batch_trades(BinanceUsdm(), frames)
    assert len(trades) == len(frames) == 500
    assert {t.exchange for t in trades} == {"binance-usdm"}
    # the same numbers as the spot parser reads from them: only the venue differs
    spot = [BinanceSpot().parse(f) for f in frames]
    assert [msgspec.structs.replace(t, exchange="binance") for t in trades] == spot


@pytest.mark.parametrize("kind", ["INSURANCE_FUND", "ADL", "NA"])
def test_futures_fills_that_are_not_market_trades_are_ignored(
    frames: list[bytes], expected: list[Trade], kind: str
) -> None:
    # liquidation (insurance fund, ADL) fills are no one's order meeting the book; REST
    # leaves them out too, so the detector never sees them
    exchange = BinanceUsdm()
    odd = with_data(frames[5], X=kind)
    assert exchange.parse(odd) is Control.IGNORED
    batch = [*frames[:5], odd, *frames[6:10]]
    parsed = exchange.parse_batch(batch)
    assert parsed.controls == [(5, Control.IGNORED)]
    assert parsed.errors == []
    assert batch_trades(exchange, batch) == expected[:5] + expected[6:10]


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("trade type as a number", {"X": 1}, "bad_schema"),
    ("no side", {"m": ...}, "bad_schema"),
    ("trade id as a string", {"t": "5266583935"}, "bad_schema"),
    ("no trade time", {"T": ...}, "bad_schema"),
    ("price zero", {"p": "0.00"}, "bad_value"),
    ("quantity negative", {"q": "-0.006"}, "bad_value"),
    ("price with a 9th decimal", {"p": "61800.300000001"}, "bad_value"),
]


@pytest.mark.parametrize(
    ("changes", "kind"), [(c, k) for _, c, k in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_broken_futures_frame_is_counted_by_kind_and_the_rest_kept(
    frames: list[bytes], expected: list[Trade], changes: dict[str, Any], kind: str
) -> None:
    exchange = BinanceUsdm()
    broken = with_data(frames[3], **changes)
    with pytest.raises(MalformedFrame) as info:
        exchange.parse(broken)
    assert info.value.kind == kind
    parsed = exchange.parse_batch([*frames[:3], broken, *frames[4:8]])
    assert [(i, e.kind) for i, e in parsed.errors] == [(3, kind)]
    assert parsed.trade_list() == expected[:3] + expected[4:8]


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":17', "not_json"),
        (b'{"code":-1121,"msg":"Invalid symbol."}', "error_reply"),
        (b'{"stream":"btcusdt@trade","data":[]}', "bad_schema"),
    ],
    ids=["truncated", "error reply", "data not an object"],
)
def test_unusable_futures_frames_have_stable_kinds(
    frames: list[bytes], frame: bytes, kind: str
) -> None:
    parsed = BinanceUsdm().parse_batch([frames[0], frame, frames[1]])
    assert [(i, e.kind) for i, e in parsed.errors] == [(1, kind)]
    assert parsed.trades == 2


def test_subscription_ack_is_a_control(frames: list[bytes]) -> None:
    parsed = BinanceUsdm().parse_batch([b'{"result":null,"id":7}', frames[0]])
    assert parsed.controls == [(0, Control.ACK)]


# -- REST ---------------------------------------------------------------------------------


def rest_reply(rows: list[dict[str, str]]) -> bytes:
    """A ``/fapi/v1/trades`` reply holding the CSV's trades, in the documented shape."""
    return json.dumps(
        [
            {
                "id": int(row["id"]),
                "price": row["price"],
                "qty": row["qty"],
                "quoteQty": row["quote_qty"],
                "time": int(row["time"]),
                "isBuyerMaker": row["is_buyer_maker"] == "true",
                "isRPITrade": False,
            }
            for row in rows
        ]
    ).encode()


def test_rest_trades_reply_gives_the_same_trades_as_the_stream(
    fixtures_dir: Path, frames: list[bytes]
) -> None:
    rows = csv_rows(fixtures_dir / CSV)
    exchange = BinanceUsdm()
    from_rest = exchange.parse_rest_trades(rest_reply(rows[:100]), "BTCUSDT")
    assert from_rest == [exchange.parse(f) for f in frames[:100]]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'{"code":-1121,"msg":"Invalid symbol."}', "bad_rest_reply"),
        (b'[{"id":1,"price":"61800.30","qty":"0.006","time":1723161256322}]', "bad_rest_reply"),
        (
            b'[{"id":1,"price":"0","qty":"0.006","time":1723161256322,"isBuyerMaker":true}]',
            "bad_value",
        ),
    ],
    ids=["error reply", "no isBuyerMaker", "price zero"],
)
def test_unusable_rest_reply_is_rejected(body: bytes, kind: str) -> None:
    with pytest.raises(MalformedFrame) as info:
        BinanceUsdm().parse_rest_trades(body, "BTCUSDT")
    assert info.value.kind == kind


def test_recent_trades_need_no_key_and_weigh_five() -> None:
    assert BinanceUsdm().recent_trades("BTCUSDT", 500) == RestRequest(
        "/fapi/v1/trades?symbol=BTCUSDT&limit=500", 5
    )
    # at most 1000 per call
    assert BinanceUsdm().recent_trades("BTCUSDT", 5000) == RestRequest(
        "/fapi/v1/trades?symbol=BTCUSDT&limit=1000", 5
    )


def test_trades_by_id_need_the_api_key_so_without_one_there_is_no_request() -> None:
    exchange = BinanceUsdm()
    assert exchange.trades_from_id("BTCUSDT", 5266583935, 500) is None
    assert exchange.capabilities.fetch_by_id is False


def test_trades_by_id_send_the_key_and_weigh_twenty() -> None:
    exchange = BinanceUsdm(api_key="k3y")
    assert exchange.capabilities.fetch_by_id is True
    assert exchange.trades_from_id("BTCUSDT", 5266583935, 1000) == RestRequest(
        # historicalTrades returns at most 500
        "/fapi/v1/historicalTrades?symbol=BTCUSDT&fromId=5266583935&limit=500",
        20,
        (("X-MBX-APIKEY", "k3y"),),
    )


def test_futures_limits() -> None:
    caps = BinanceUsdm().capabilities
    assert caps.consecutive_ids is True
    assert caps.recent_trades is True
    assert caps.max_streams_per_connection == 1024
    assert caps.max_messages_per_second == 10
    assert caps.max_connection_age_s == 24 * 3600
    assert caps.rest_page == 500
    assert caps.rest_weight_limit == 2400


# -- streams and subscriptions ------------------------------------------------------------


@pytest.mark.parametrize("base", ["wss://fstream.binance.com", "wss://fstream.binance.com/"])
def test_stream_url_uses_the_public_route(base: str) -> None:
    assert (
        BinanceUsdm().stream_url(base, ["BTCUSDT", "ETHUSDT"])
        == "wss://fstream.binance.com/public/stream?streams=btcusdt@trade/ethusdt@trade"
    )


def test_stream_url_of_a_local_simulator_gets_the_route_too() -> None:
    assert (
        BinanceUsdm().stream_url("ws://127.0.0.1:9443", ["BTCUSDT"])
        == "ws://127.0.0.1:9443/public/stream?streams=btcusdt@trade"
    )


def test_stream_url_needs_between_one_and_1024_symbols() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BinanceUsdm().stream_url(BinanceUsdm.default_ws_url, [])
    with pytest.raises(ValueError, match="1024"):
        BinanceUsdm().stream_url(BinanceUsdm.default_ws_url, [f"S{i}USDT" for i in range(1025)])


def test_subscribe_and_unsubscribe_are_binance_json_requests() -> None:
    exchange = BinanceUsdm()
    assert json.loads(exchange.subscribe(["BTCUSDT", "ETHUSDT"], 3)) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@trade", "ethusdt@trade"],
        "id": 3,
    }
    assert exchange.unsubscribe(["BTCUSDT"], 4) == (
        b'{"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":4}'
    )
    assert exchange.heartbeat() is None  # WebSocket pings keep the connection


def test_both_binance_venues_are_registered_by_name() -> None:
    assert EXCHANGES["binance"] is BinanceSpot
    assert EXCHANGES["binance-usdm"] is BinanceUsdm
    usdm = EXCHANGES["binance-usdm"](api_key="k3y")
    assert (usdm.name, usdm.default_ws_url, usdm.default_rest_url) == (
        "binance-usdm",
        "wss://fstream.binance.com",
        "https://fapi.binance.com",
    )


# -- the simulator codec ------------------------------------------------------------------


def test_codec_writes_futures_events_that_parse_back_to_the_trade(
    frames: list[bytes], expected: list[Trade]
) -> None:
    codec = BinanceUsdm().simulator_codec()
    exchange = BinanceUsdm()
    for trade, recorded in zip(expected, frames, strict=True):
        written = codec.trade_frame(trade)
        assert list(json.loads(written)) == list(json.loads(recorded)["data"])  # key order
        assert exchange.parse(written) == trade
    rows = json.dumps([codec.rest_trade(t) for t in expected]).encode()
    assert exchange.parse_rest_trades(rows, "BTCUSDT") == expected
    assert "isBestMatch" not in codec.rest_trade(expected[0])


def test_codec_names_the_futures_paths() -> None:
    codec = BinanceUsdm().simulator_codec()
    assert codec.ws_routes == ("/public/ws", "/public/stream")
    assert (codec.recent_trades_path, codec.historical_trades_path) == (
        "/fapi/v1/trades",
        "/fapi/v1/historicalTrades",
    )
    assert (codec.time_path, codec.ping_path, codec.exchange_info_path) == (
        "/fapi/v1/time",
        "/fapi/v1/ping",
        "/fapi/v1/exchangeInfo",
    )
    assert codec.api_key_header == "X-MBX-APIKEY"
    assert codec.stream_name("BTCUSDT") == "btcusdt@trade"
    assert codec.shutdown_frame() is None
