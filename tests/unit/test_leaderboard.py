"""The market board (core/leaderboard.py): per-symbol counts, maxima and spark lines over
the last 5 minutes and hour, by exchange time, O(1) per event and nothing per second."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.core.leaderboard import WINDOWS, Leaderboard, Row, rank
from spikewatch.core.model import NotionalSignal, Signal, iso_utc
from spikewatch.web.market import MarketBoard

from helpers import spike_signal

T0 = 1_723_161_600_000_000  # 2024-08-09T00:00:00Z, µs
MIN = 60_000_000
SEC = 1_000_000


def spike(
    time_us: int, symbol: str = "BTCUSDT", ratio: float = 20.0, trade_id: int | None = None
) -> Signal:
    """A volume spike of ``symbol`` (USDT quote: its USD value is its quote volume)."""
    signal = spike_signal("binance", trade_id if trade_id is not None else time_us, time_us, symbol)
    return msgspec.structs.replace(signal, ratio=ratio)


def notional(time_us: int, usd: float | None, symbol: str = "ETHBTC") -> Signal:
    return NotionalSignal(
        id=f"binance:{symbol}:notional:{time_us}",
        exchange="binance",
        symbol=symbol,
        detector="notional",
        trade_id=time_us,
        timestamp=iso_utc(time_us),
        time_us=time_us,
        price=0.05,
        volume=10.0,
        quote_volume=0.5,
        side="buy",
        usd_value=usd,
        tier=100_000.0,
        unit="order",
        fills=3,
        levels=2,
        first_price=0.05,
        last_price=0.05,
        last_trade_id=time_us + 2,
    )


def alert(time_us: int, symbol: str = "BTCUSDT") -> Alert:
    return Alert(
        id=f"whale:binance:{symbol}:{time_us}",
        rule="whale",
        severity="warning",
        exchange="binance",
        symbol=symbol,
        side="buy",
        timestamp=iso_utc(time_us),
        time_us=time_us,
        last_time_us=time_us,
        price=1.0,
        usd_value=500_000.0,
        usd_total=500_000.0,
        signals=1,
        detectors=["notional"],
        first_signal="x",
        summary="a whale",
    )


BTC = ("binance", "BTCUSDT")


def test_a_spike_counts_in_both_windows_with_its_usd_value_and_ratio() -> None:
    board = Leaderboard()
    board.add_signal(spike(T0 + 5 * SEC, ratio=12.5))

    for window in ("5m", "1h"):
        row = board.row(BTC, window)
        assert (row.signals, row.alerts) == (1, 0)
        assert row.usd_max == 123_600.6  # USDT: the quote volume is its USD value
        assert row.ratio_max == 12.5
        assert row.spark[-1] == 1  # the newest bucket is the one being read
        assert sum(row.spark) == 1
        assert row.last_signal is not None
        assert row.last_signal.time_us == T0 + 5 * SEC
    assert len(board.row(BTC, "5m").spark) == 30
    assert len(board.row(BTC, "1h").spark) == 60


def test_the_five_minutes_move_on_every_ten_seconds_and_the_hour_every_minute() -> None:
    board = Leaderboard()
    board.add_signal(spike(T0))  # bucket 0 of both

    # 4 min 59 s later: still in the 5 minutes (30 buckets of 10 s, the 30th is now's)
    assert board.row(BTC, "5m", T0 + 4 * MIN + 59 * SEC).signals == 1
    assert board.row(BTC, "5m", T0 + 5 * MIN).signals == 0
    assert board.row(BTC, "1h", T0 + 59 * MIN + 59 * SEC).signals == 1
    assert board.row(BTC, "1h", T0 + 60 * MIN).signals == 0
    # reading later costs nothing and forgets nothing: the signal is still the last one
    row = board.row(BTC, "1h", T0 + 24 * 60 * MIN)
    assert (row.signals, row.usd_max, row.ratio_max) == (0, None, None)
    assert row.last_signal is not None


def test_a_read_is_never_before_the_latest_event() -> None:
    board = Leaderboard()
    board.add_signal(spike(T0 + 10 * MIN))

    assert board.now() == T0 + 10 * MIN
    assert board.now(T0) == T0 + 10 * MIN  # the buckets before it may have been reused
    assert board.row(BTC, "5m", T0).signals == 1


def test_alerts_count_by_their_first_signal_and_usd_without_a_rate_is_unknown() -> None:
    board = Leaderboard()
    board.add_alert(alert(T0))
    board.add_signal(notional(T0 + SEC, usd=None))  # ETHBTC: no USD rate known yet

    assert board.row(BTC, "1h").alerts == 1
    eth = board.row(("binance", "ETHBTC"), "1h")
    assert (eth.signals, eth.usd_max, eth.ratio_max) == (1, None, None)
    board.add_signal(notional(T0 + 2 * SEC, usd=250_000.0))
    assert board.row(("binance", "ETHBTC"), "1h").usd_max == 250_000.0


def test_a_symbol_never_seen_is_a_row_of_zeros() -> None:
    board = Leaderboard()

    row = board.row(("binance", "XRPUSDT"), "5m")
    assert row == Row("binance", "XRPUSDT", 0, 0, None, None, [0] * 30, None)
    assert len(board) == 0  # a read allocates nothing


def test_the_ranking_puts_the_most_active_first_by_what_is_asked() -> None:
    board = Leaderboard()
    for i in range(3):
        board.add_signal(spike(T0 + i * SEC, "BTCUSDT", ratio=11.0))
    board.add_signal(spike(T0 + 5 * SEC, "ETHUSDT", ratio=40.0))
    board.add_alert(alert(T0 + 5 * SEC, "ETHUSDT"))
    board.add_signal(notional(T0 + 6 * SEC, usd=9_000_000.0, symbol="SOLUSDT"))

    def order(by: str) -> list[str]:
        return [r.symbol for r in board.top("5m", by)]

    assert order("signals") == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert order("alerts") == ["ETHUSDT", "BTCUSDT", "SOLUSDT"]
    assert order("usd") == ["SOLUSDT", "BTCUSDT", "ETHUSDT"]
    assert order("ratio") == ["ETHUSDT", "BTCUSDT", "SOLUSDT"]
    # quiet symbols asked for go last, by name
    keys = [("binance", s) for s in ("ZECUSDT", "ADAUSDT", "BTCUSDT")]
    assert [r.symbol for r in board.top("5m", "signals", keys=keys)] == [
        "BTCUSDT",
        "ADAUSDT",
        "ZECUSDT",
    ]
    assert rank([], "usd") == []


def test_an_event_older_than_the_hour_before_the_symbols_latest_is_left_out() -> None:
    board = Leaderboard()
    board.add_signal(spike(T0 + 120 * MIN))
    board.add_signal(spike(T0))  # its slot holds a later bucket: outside every window

    assert board.row(BTC, "1h").signals == 1
    assert board.row(BTC, "1h").last_signal is not None
    assert board.row(BTC, "1h").last_signal.time_us == T0 + 120 * MIN  # type: ignore[union-attr]


# -- the property: the board agrees with a count of every event ----------------------------

SYMBOLS = ("BTCUSDT", "ETHUSDT")
#: times within 3 hours (every window, many reused buckets), or many within 10 minutes
#: (rings moving on bucket by bucket)
times = st.integers(min_value=T0, max_value=T0 + 180 * MIN) | st.integers(
    min_value=T0 + 60 * MIN, max_value=T0 + 70 * MIN
)
events = st.lists(
    st.tuples(
        st.sampled_from(("signal", "alert")),
        st.sampled_from(SYMBOLS),
        times,
        st.floats(min_value=0.0, max_value=1e9, allow_nan=False),
    ),
    max_size=60,
)


def brute_force(
    fed: list[tuple[str, str, int, float]], symbol: str, window: str, now_us: int
) -> tuple[int, int, float | None, float | None, list[int]]:
    """Count every event of ``symbol`` in ``window``'s buckets up to ``now_us``'s."""
    width, size = WINDOWS[window]
    newest = now_us // width
    spark = [0] * size
    signals = alerts = 0
    usd: list[float] = []
    for kind, sym, time_us, value in fed:
        number = time_us // width
        if sym != symbol or not newest - size < number <= newest:
            continue
        if kind == "alert":
            alerts += 1
            continue
        signals += 1
        spark[number - (newest - size + 1)] += 1
        usd.append(value)
    top = max(usd) if usd else None
    return signals, alerts, top, top, spark


@settings(max_examples=300, deadline=None)
@given(fed=events, read_at=times)
def test_the_board_equals_a_count_of_every_event_for_any_sequence_and_read_time(
    fed: list[tuple[str, str, int, float]], read_at: int
) -> None:
    board = Leaderboard()
    for kind, symbol, time_us, value in fed:
        if kind == "signal":
            # the value is both its USD value (quote volume, USDT) and its ratio
            signal = spike(time_us, symbol, ratio=value, trade_id=len(board.keys()))
            board.add_signal(msgspec.structs.replace(signal, quote_volume=value))
        else:
            board.add_alert(alert(time_us, symbol))
    # a read is made at read_at, or at the latest event if that is later
    now = max([read_at, *(t for _, _, t, _ in fed)])

    for symbol in SYMBOLS:
        for window in WINDOWS:
            row = board.row(("binance", symbol), window, read_at)
            got = (row.signals, row.alerts, row.usd_max, row.ratio_max, row.spark)
            assert got == brute_force(fed, symbol, window, now)


@settings(max_examples=50, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["AAAUSDT", "BBBUSDT", "CCCUSDT"]),
            st.sampled_from(["whale", "surge"]),
            st.integers(1, 400),
        ),
        max_size=60,
    ),
    again=st.integers(0, 60),
)
def test_the_market_board_counts_an_alert_opened_again_once(
    events: list[tuple[str, str, int]], again: int
) -> None:
    """After a crash the trades since the last checkpoint are processed again and may
    open alerts the board has counted (the same id and time): they count once, a new one
    counts, and the board remembers one time per symbol and rule, however many alerts."""
    symbols = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    board = MarketBoard("binance", lambda: symbols)
    reference = Leaderboard()  # each alert fed once
    opened = []
    time_us = T0
    for symbol, rule, seconds in events:
        time_us += seconds * SEC  # a symbol and rule's alerts open in time order
        one = msgspec.structs.replace(
            alert(time_us, symbol), rule=rule, id=f"{rule}:binance:{symbol}:{time_us}"
        )
        opened.append(AlertEvent(one, opened=True))
        reference.add_alert(one)
        board.on_alerts([opened[-1], AlertEvent(one, opened=False)])  # an update: not new
    board.on_alerts(opened[len(opened) - again :] if again else [])  # the latest, again

    for window in WINDOWS:
        assert board.rows(window, board.keys, None) == [
            reference.row(key, window) for key in board.keys
        ]
    assert len(board._counted) <= len(symbols) * 2
