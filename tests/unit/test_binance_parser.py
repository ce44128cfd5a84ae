"""The Binance frame parser, on real recorded frames and on everything that can go wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikewatch.core.model import Side, Trade
from spikewatch.exchanges.base import Control, MalformedFrame, RestRequest
from spikewatch.exchanges.binance import BinanceSpot

COMBINED = "binance-spot-trade-combined.hftbacktest-2024-08-08.jsonl"
RAW = "binance-spot-trade-raw.hftbacktest-2024-08-08.jsonl"
LEGACY = "binance-spot-trade-legacy-ba-fields.BinanceTickDataTracker-2023-11-03.jsonl"
USDM = "binance-usdm-trade-combined.collect-binancefutures-2022-08-11.jsonl"

#: One real spot frame (the first of the combined recording), for building broken ones.
REAL_EVENT: dict[str, Any] = {
    "e": "trade",
    "E": 1723161255343,
    "s": "BTCUSDT",
    "t": 3735683259,
    "p": "61837.63000000",
    "q": "0.02000000",
    "T": 1723161255342,
    "m": True,
    "M": True,
}

parser = BinanceSpot()


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def compact(doc: object) -> str:
    """JSON the way Binance writes it: no spaces, keys in the given order."""
    return json.dumps(doc, separators=(",", ":"))


def combined(event: dict[str, Any], stream: str = "btcusdt@trade") -> str:
    return compact({"stream": stream, "data": event})


def with_(**changes: Any) -> dict[str, Any]:
    """The real event with some fields changed (a value of ... removes the field)."""
    event = dict(REAL_EVENT)
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return event


def assert_trade_is_the_event(trade: Trade | Control, event: dict[str, Any]) -> None:
    """The parsed trade holds exactly the values of the frame's strings."""
    assert isinstance(trade, Trade)
    assert trade.exchange == "binance"
    assert trade.symbol == event["s"]
    assert trade.trade_id == event["t"]
    assert Decimal(trade.price) == Decimal(event["p"]) * 10**8
    assert Decimal(trade.qty) == Decimal(event["q"]) * 10**8
    assert trade.time_us == event["T"] * 1000
    assert trade.side is (Side.SELL if event["m"] else Side.BUY)


# -- real frames --------------------------------------------------------------------------


def test_combined_stream_frames_parse_to_their_exact_values(fixtures_dir: Path) -> None:
    lines = read_lines(fixtures_dir / COMBINED)
    assert len(lines) == 500
    for line in lines:
        assert_trade_is_the_event(parser.parse(line), json.loads(line)["data"])


def test_raw_and_combined_forms_of_the_same_frames_give_identical_trades(
    fixtures_dir: Path,
) -> None:
    from_combined = [parser.parse(line) for line in read_lines(fixtures_dir / COMBINED)]
    from_raw = [parser.parse(line) for line in read_lines(fixtures_dir / RAW)]
    assert len(from_raw) == 500
    assert from_raw == from_combined
    assert len({t.trade_id for t in from_raw if isinstance(t, Trade)}) == 500


def test_frames_as_bytes_and_as_text_parse_alike(fixtures_dir: Path) -> None:
    for line in read_lines(fixtures_dir / COMBINED)[:50] + read_lines(fixtures_dir / RAW)[:50]:
        assert parser.parse(line.encode()) == parser.parse(line)


def test_legacy_frames_with_b_and_a_fields_and_spaces_parse(fixtures_dir: Path) -> None:
    lines = read_lines(fixtures_dir / LEGACY)
    assert len(lines) == 680
    for line in lines:
        assert_trade_is_the_event(parser.parse(line), json.loads(line))


def test_usdm_futures_frames_with_x_and_without_m_parse(fixtures_dir: Path) -> None:
    lines = read_lines(fixtures_dir / USDM)
    assert len(lines) == 500
    for line in lines:
        event = json.loads(line)["data"]
        assert "M" not in event
        assert event["X"] == "MARKET"
        assert_trade_is_the_event(parser.parse(line), event)


def test_usdm_prices_with_two_decimals_keep_their_value() -> None:
    frame = (
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1660228023422,"T":1660228023414,'
        '"s":"BTCUSDT","t":2691833628,"p":"24670.90","q":"0.070","X":"MARKET","m":true}}'
    )
    trade = parser.parse(frame)
    assert isinstance(trade, Trade)
    assert (trade.price, trade.qty) == (2_467_090_000_000, 7_000_000)


def test_lower_case_symbol_is_upper_cased() -> None:
    trade = parser.parse(compact(with_(s="btcusdt")))
    assert isinstance(trade, Trade)
    assert trade.symbol == "BTCUSDT"


RESERIALISED: dict[str, Callable[[str], str]] = {
    "spaces after separators": lambda line: json.dumps(json.loads(line)),
    "sorted keys, data first": lambda line: json.dumps(json.loads(line), sort_keys=True),
    "indented": lambda line: json.dumps(json.loads(line), indent=1),
    "leading space": lambda line: " " + line,
}


@pytest.mark.parametrize("reserialise", RESERIALISED.values(), ids=RESERIALISED.keys())
def test_combined_frame_parses_whatever_its_key_order_and_whitespace(
    fixtures_dir: Path, reserialise: Callable[[str], str]
) -> None:
    # JSON key order and whitespace carry no meaning (RFC 8259); a recorder that
    # re-serialises frames (sort_keys, indent) must not turn good trades into bad_schema
    for line in read_lines(fixtures_dir / COMBINED)[:20]:
        assert parser.parse(reserialise(line)) == parser.parse(line)


# -- malformed frames ---------------------------------------------------------------------


MALFORMED: list[tuple[str, str | bytes, str]] = [
    ("plain text", "not_json", "not_json"),
    ("invalid utf-8", b"\xff\xfe\x00", "not_json"),
    ("empty frame", "", "not_json"),
    ("truncated frame", combined(REAL_EVENT)[:80], "not_json"),
    ("json array", "[1,2,3]", "bad_schema"),
    ("json number", "5", "bad_schema"),
    ("json string", '"trade"', "bad_schema"),
    ("json null", "null", "bad_schema"),
    ("data not an object", '{"stream":"btcusdt@trade","data":[1]}', "bad_schema"),
    ("missing qty", compact(with_(q=...)), "bad_schema"),
    ("missing trade id, combined", combined(with_(t=...)), "bad_schema"),
    ("missing time", compact(with_(T=...)), "bad_schema"),
    ("missing side", compact(with_(m=...)), "bad_schema"),
    ("price as a number", compact(with_(p=1.5)), "bad_schema"),
    ("price as a number, combined", combined(with_(p=61837.63)), "bad_schema"),
    ("trade id as a string", compact(with_(t="3735683259")), "bad_schema"),
    ("trade id as a float", compact(with_(t=3735683259.5)), "bad_schema"),
    ("side flag as a string", compact(with_(m="true")), "bad_schema"),
    ("symbol as a number", compact(with_(s=1)), "bad_schema"),
    ("price zero", compact(with_(p="0")), "bad_value"),
    ("price zero with decimals", combined(with_(p="0.00000000")), "bad_value"),
    ("qty negative", compact(with_(q="-1")), "bad_value"),
    ("qty NaN", compact(with_(q="NaN")), "bad_value"),
    ("price infinite", compact(with_(p="Infinity")), "bad_value"),
    ("price with exponent", compact(with_(p="6.183763e4")), "bad_value"),
    ("qty with a 9th decimal", compact(with_(q="0.020000001")), "bad_value"),
    ("trade id 2**63", compact(with_(t=2**63)), "bad_value"),
    ("trade id above uint64", compact(with_(t=2**64 + 1)), "bad_value"),
    ("trade id negative", compact(with_(t=-1)), "bad_value"),
    ("time zero", compact(with_(T=0)), "bad_value"),
    ("time negative", combined(with_(T=-1)), "bad_value"),
    ("time past year 9999", compact(with_(T=253_402_300_800_000)), "bad_value"),
    ("error reply", '{"code":-1121,"msg":"Invalid symbol."}', "error_reply"),
]


@pytest.mark.parametrize(
    ("frame", "kind"), [(f, k) for _, f, k in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_frame_is_rejected_with_a_stable_kind(frame: str | bytes, kind: str) -> None:
    with pytest.raises(MalformedFrame) as info:
        parser.parse(frame)
    assert info.value.kind == kind
    assert str(info.value).startswith(f"{kind}: ")


def test_malformed_frame_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="bad_value"):
        parser.parse(compact(with_(q="0")))


def test_deeply_nested_json_is_rejected_as_malformed() -> None:
    # a parser must never let an unusable frame escape as anything but MalformedFrame:
    # the engine counts and skips MalformedFrame, anything else ends the ingest loop
    for depth in (500, 5_000, 50_000):
        with pytest.raises(MalformedFrame):
            parser.parse("[" * depth + "]" * depth)
        with pytest.raises(MalformedFrame):
            parser.parse('{"a":' * depth + "1" + "}" * depth)


# -- control frames -----------------------------------------------------------------------


SHUTDOWN = '{"e":"serverShutdown","E":1700000000000}'
AGG_TRADE = (
    '{"e":"aggTrade","E":1723161255343,"s":"BTCUSDT","a":2279530741,"p":"61837.63000000",'
    '"q":"0.02000000","f":3735683259,"l":3735683259,"T":1723161255342,"m":true,"M":true}'
)
BOOK_TICKER = (
    '{"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BTCUSDT",'
    '"b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}'
)


@pytest.mark.parametrize(
    ("frame", "control"),
    [
        (SHUTDOWN, Control.SHUTDOWN),
        (f'{{"stream":"btcusdt@trade","data":{SHUTDOWN}}}', Control.SHUTDOWN),
        (SHUTDOWN.encode(), Control.SHUTDOWN),
        ('{"result":null,"id":1}', Control.ACK),
        ('{"result":["btcusdt@trade"],"id":7}', Control.ACK),
        (AGG_TRADE, Control.IGNORED),
        (f'{{"stream":"btcusdt@aggTrade","data":{AGG_TRADE}}}', Control.IGNORED),
        (BOOK_TICKER, Control.IGNORED),
        (f'{{"stream":"btcusdt@bookTicker","data":{BOOK_TICKER}}}', Control.IGNORED),
    ],
)
def test_control_frames_are_recognised(frame: str | bytes, control: Control) -> None:
    assert parser.parse(frame) is control


@pytest.mark.parametrize("kind", ["INSURANCE_FUND", "ADL", "NA"])
def test_futures_fills_that_are_not_market_trades_are_ignored(
    fixtures_dir: Path, kind: str
) -> None:
    doc = json.loads(read_lines(fixtures_dir / USDM)[0])
    assert isinstance(parser.parse(compact(doc)), Trade)
    doc["data"]["X"] = kind
    assert parser.parse(compact(doc)) is Control.IGNORED


# -- stream URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base", ["wss://stream.binance.com:9443", "wss://stream.binance.com:9443/"]
)
def test_stream_url_subscribes_to_every_symbols_trade_stream(base: str) -> None:
    assert (
        parser.stream_url(base, ["BTCUSDT", "ETHUSDT"])
        == "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/ethusdt@trade"
    )


def test_stream_url_needs_between_one_and_1024_symbols() -> None:
    with pytest.raises(ValueError, match="at least one"):
        parser.stream_url("wss://stream.binance.com:9443", [])
    with pytest.raises(ValueError, match="1024"):
        parser.stream_url("wss://stream.binance.com:9443", [f"S{i}USDT" for i in range(1025)])
    url = parser.stream_url("wss://x", [f"S{i}USDT" for i in range(1024)])
    assert url.count("@trade") == 1024


def test_subscribe_message_is_binance_json_and_pings_need_no_heartbeat() -> None:
    assert parser.subscribe(["BTCUSDT", "ETHUSDT"], 1) == (
        b'{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@trade"],"id":1}'
    )
    assert json.loads(parser.unsubscribe(["ETHUSDT"], 2)) == {
        "method": "UNSUBSCRIBE",
        "params": ["ethusdt@trade"],
        "id": 2,
    }
    assert parser.heartbeat() is None


# -- REST requests and limits -------------------------------------------------------------


def test_rest_requests_are_the_spot_paths_with_weight_25_and_no_key() -> None:
    spot = BinanceSpot(api_key="unused")
    assert spot.recent_trades("BTCUSDT", 5000) == RestRequest(
        "/api/v3/trades?symbol=BTCUSDT&limit=1000", 25
    )
    assert spot.trades_from_id("BTCUSDT", 42, 10) == RestRequest(
        "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=42&limit=10", 25
    )


def test_spot_limits_and_simulator_paths() -> None:
    caps = parser.capabilities
    assert (caps.fetch_by_id, caps.max_streams_per_connection) == (True, 1024)
    assert (caps.max_messages_per_second, caps.rest_page, caps.rest_weight_limit) == (5, 1000, 6000)
    codec = parser.simulator_codec()
    assert codec.ws_routes == ("/ws", "/stream")
    assert codec.historical_trades_path == "/api/v3/historicalTrades"
    assert codec.api_key_header == ""
    trade = parser.parse(combined(REAL_EVENT))
    assert isinstance(trade, Trade)
    assert parser.parse(codec.trade_frame(trade)) == trade


# -- fuzz ---------------------------------------------------------------------------------


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)

#: Values close to real ones, so the fuzz reaches the checks after decoding too.
field_values: dict[str, st.SearchStrategy[Any]] = {
    "e": st.sampled_from(["trade", "aggTrade", "serverShutdown", ""]) | st.text(max_size=5),
    "s": st.sampled_from(["BTCUSDT", "btcusdt", ""]) | st.text(max_size=8),
    "t": st.integers() | st.sampled_from([0, 2**63 - 1, 2**63, 2**64]),
    "p": st.sampled_from(["61837.63000000", "0", "-1", "NaN", "1e5", ".", ""])
    | st.decimals(allow_nan=True).map(str)
    | st.text(max_size=12),
    "q": st.sampled_from(["0.02000000", "0.000000001", "1.0000000000"]) | st.text(max_size=12),
    "T": st.integers() | st.sampled_from([1, 253_402_300_799_999, 253_402_300_800_000]),
    "m": st.booleans(),
    "X": st.sampled_from(["MARKET", "INSURANCE_FUND", None]),
}
trade_like = st.fixed_dictionaries(
    {}, optional={key: values | json_values for key, values in field_values.items()}
)


def parse_or_malformed(frame: str | bytes) -> Trade | Control | MalformedFrame:
    try:
        return parser.parse(frame)
    except MalformedFrame as exc:
        return exc


def assert_outcome_is_allowed(outcome: Trade | Control | MalformedFrame) -> None:
    assert isinstance(outcome, Trade | Control | MalformedFrame)
    if isinstance(outcome, MalformedFrame):
        assert outcome.kind in {"not_json", "bad_schema", "bad_value", "error_reply"}
    if isinstance(outcome, Trade):
        assert outcome.price > 0
        assert outcome.qty > 0
        assert outcome.time_us > 0
        assert outcome.trade_id >= 0


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_malformed_frame(frame: bytes) -> None:
    assert_outcome_is_allowed(parse_or_malformed(frame))


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises_anything_but_malformed_frame(frame: str) -> None:
    assert_outcome_is_allowed(parse_or_malformed(frame))


@given(json_values, st.sampled_from([json.dumps, compact]))
def test_arbitrary_json_never_raises_anything_but_malformed_frame(
    doc: object, dump: Callable[[object], str]
) -> None:
    frame = dump(doc)
    assert_outcome_is_allowed(parse_or_malformed(frame))
    assert_outcome_is_allowed(parse_or_malformed(frame.encode()))


@given(trade_like, st.booleans())
def test_trade_like_frames_never_raise_anything_but_malformed_frame(
    event: dict[str, Any], wrap: bool
) -> None:
    frame = combined(event) if wrap else compact(event)
    assert_outcome_is_allowed(parse_or_malformed(frame))
