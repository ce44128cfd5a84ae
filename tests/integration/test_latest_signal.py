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


def test_get_signal_serves_the_latest_spike_not_an_order_event(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    """With the alert profile on, whale orders and surges are signals too, but
    `/api/get_signal` keeps its contract: the latest *spike* (signal_type VolumeSpike),
    live and after a restart, through the fast path and the routed view."""
    from spikewatch.web.app import create_app

    settings = load_settings({"db": str(tmp_path / "p.db"), "alert_profile": "default"}, env={})
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store)
    raised: list[Signal] = []
    engine.add_listener(raised.append)
    for frame in btc_frames:  # up to the first order event after a spike
        engine.handle_frame(frame, time.time_ns())
        if raised and raised[-1].signal_type != "VolumeSpike" and raised[0].spike:
            break
    store.add(raised)  # as the writer thread of a running engine does
    signals = store.page(limit=1000).signals
    kinds = [s.signal_type for s in signals]
    assert {"VolumeSpike", "Notional"} <= set(kinds)
    assert kinds[0] != "VolumeSpike"  # the newest stored signal is an order event
    newest_spike = next(s for s in signals if s.signal_type == "VolumeSpike")
    client = create_app(settings, engine).test_client()
    for path in ("/api/get_signal", "/api/get_signal?symbol=BTCUSDT"):
        assert client.get(path).get_json()["id"] == newest_spike.id, path
    store.close()
    again = Engine(settings, SQLiteSignalStore(settings.db))  # a restart
    assert again.latest_signal() == newest_spike
    assert again.latest_signal("BTCUSDT") == newest_spike
    again.store.close()
