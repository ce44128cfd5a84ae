"""The latest signal after a restart is not hostage to one junk time: a signal stamped in
2099 (stored by a version without the time check) must not stay `/api/get_signal`'s
answer for good (issue 10, item 3)."""

from __future__ import annotations

from pathlib import Path

from spikewatch.config import load_settings
from spikewatch.core.model import VolumeSpikeSignal, iso_utc
from spikewatch.engine import Engine
from spikewatch.store.sqlite import SQLiteSignalStore


def spike(trade_id: int, time_us: int) -> VolumeSpikeSignal:
    return VolumeSpikeSignal(
        id=f"binance:BTCUSDT:volume_spike:{trade_id}",
        exchange="binance",
        symbol="BTCUSDT",
        detector="volume_spike",
        trade_id=trade_id,
        timestamp=iso_utc(time_us),
        time_us=time_us,
        price=61837.63,
        volume=2.5,
        quote_volume=154594.075,
        side="buy",
        average_volume=0.1,
        ratio=25.0,
        window=200,
        threshold=10.0,
    )


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
