"""The latest signal after a restart is not hostage to one junk time: a signal stamped in
2099 (stored by a version without the time check) must not stay `/api/get_signal`'s
answer for good (issue 10, item 3)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from spikewatch.config import load_settings
from spikewatch.core.model import Signal
from spikewatch.engine import Engine
from spikewatch.store.sqlite import SQLiteSignalStore

from helpers import spike_signal


def spike(trade_id: int, time_us: int) -> Signal:
    return spike_signal("binance", trade_id, time_us)


def test_a_stored_signal_from_2099_is_not_the_latest_after_a_restart(tmp_path: Path) -> None:
    settings = load_settings({"db": str(tmp_path / "s.db")}, env={})
    store = SQLiteSignalStore(settings.db)
    real = spike(3735683300, 1_723_161_255_342_000)
    junk = spike(3735683301, 4_070_908_800_000_000)  # 2099-01-01
    store.add([real, junk], [1, 2])
    engine = Engine(settings, store)
    try:
        assert engine.latest_signal() == real
        assert engine.latest_signal("BTCUSDT") == real
    finally:
        store.close()


def test_orders_of_served_history_complete_by_the_feeds_clock(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    """A simulator or the demo serves 2024 trades today: an order is complete when the
    feed's time has moved 2 s past it, not the machine's clock (which would cut every
    open order at each tick); a live feed's orders go by the wall clock."""
    settings = load_settings({"db": str(tmp_path / "c.db"), "alert_profile": "default"}, env={})
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store)
    try:
        engine.handle_frames(btc_frames[:500], time.time_ns())
        last = json.loads(btc_frames[499])["data"]["T"] * 1000
        assert engine._order_clock() == last
    finally:
        store.close()
    fresh = Engine(settings, SQLiteSignalStore(":memory:"))  # nothing seen: the wall clock
    assert abs(fresh._order_clock() - time.time_ns() // 1000) < 5_000_000
