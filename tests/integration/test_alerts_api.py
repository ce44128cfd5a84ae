"""``GET /api/alerts``: the alert log of a real engine with the shipped alert profile, fed
a real day of BTCUSDT USD-M futures (60 alerts: 26 whale, 34 surge; docs/ALERTS.md), and
of one without alert rules. Delivery states come from a real delivery to a local receiver.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from flask.testing import FlaskClient

from spikewatch.alerting import DeliveryWorker
from spikewatch.config import Settings, load_settings
from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.engine import Engine
from spikewatch.exchanges.binance import BinanceUsdm
from spikewatch.hub import Event
from spikewatch.replay.readers import read_trades
from spikewatch.store import SQLiteSignalStore
from spikewatch.web import create_app

from helpers import wait_until, waitress_server
from receiver import Receiver, Reply

DAY = "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"


@dataclass
class Fed:
    """An engine (never started: frames handed to it as the WebSocket client would) with
    its app, and every alert event it raised, in order."""

    engine: Engine
    client: FlaskClient
    events: list[AlertEvent]

    @property
    def latest(self) -> dict[str, Alert]:
        """Each alert's latest fold, by id."""
        return {event.alert.id: event.alert for event in self.events}


def build(settings: Settings, frames: list[bytes]) -> Fed:
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store)
    events: list[AlertEvent] = []
    engine.add_alert_sink(events.extend)
    feed(engine, frames)
    app = create_app(settings, engine)
    app.config["TESTING"] = True
    return Fed(engine, app.test_client(), events)


def feed(engine: Engine, frames: list[bytes]) -> None:
    """Hand ``frames`` to ``engine`` as its WebSocket client would."""
    for frame in frames:
        engine.handle_frame(frame)


def close(fed: Fed) -> None:
    fed.engine.stop()
    fed.engine.store.close()


@pytest.fixture(scope="module")
def day_frames(fixtures_dir: Path) -> list[bytes]:
    """The day's 137,988 trades as the futures stream sends them."""
    usdm = BinanceUsdm()
    codec = usdm.simulator_codec()
    return [codec.trade_frame(t) for t in read_trades([fixtures_dir / DAY], exchange=usdm)]


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory, day_frames: list[bytes]) -> Iterator[Fed]:
    settings = load_settings(
        {
            "db": str(tmp_path_factory.mktemp("day") / "s.db"),
            "exchange": "binance-usdm",
            "symbols": "BTCUSDT",
            "alert_profile": "default",
        },
        env={},
    )
    fed = build(settings, day_frames)
    yield fed
    close(fed)


def get(fed: Fed, **query: str | int) -> Any:
    response = fed.client.get("/api/alerts", query_string=query)
    assert response.status_code == 200, response.get_json()
    assert response.mimetype == "application/json"
    return response.get_json()


def every(fed: Fed, **query: str | int) -> list[dict[str, Any]]:
    """Every alert the log has for ``query``, following the cursors."""
    out: list[dict[str, Any]] = []
    body = get(fed, **query)
    out += body["alerts"]
    while body["next_cursor"] is not None:
        body = get(fed, **query, cursor=body["next_cursor"])
        out += body["alerts"]
    return out


# -- the log ------------------------------------------------------------------------------


def test_the_day_s_alerts_are_listed_newest_first_each_once_across_pages(day: Fed) -> None:
    opened = [e.alert for e in day.events if e.opened]
    assert len(opened) == 60  # the shipped profile on this day (docs/ALERTS.md)

    first = get(day, limit=7)
    listed = every(day, limit=7)

    assert first["enabled"] is True
    assert "note" not in first
    assert first["count"] == 7
    assert [a["id"] for a in listed] == [
        a.id for a in sorted(opened, key=lambda a: (a.time_us, a.id), reverse=True)
    ]
    assert len({a["id"] for a in listed}) == 60
    last = get(day, limit=60)
    assert last["count"] == 60
    assert last["next_cursor"] is None


def test_an_alert_shows_its_latest_fold(day: Fed) -> None:
    folded = {e.alert.id for e in day.events if not e.opened}
    assert folded  # the day has alerts that more signals folded into

    listed = {a["id"]: a for a in every(day, limit=1000)}

    for alert_id in folded:
        latest = day.latest[alert_id]
        shown = listed[alert_id]
        assert shown["signals"] == latest.signals > 1
        assert shown["usd_total"] == latest.usd_total
        assert shown["summary"] == latest.summary
        assert shown["deliveries"] == {}  # no destination configured


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"rule": "surge"}, lambda a: a.rule == "surge"),
        ({"rule": "whale"}, lambda a: a.rule == "whale"),
        ({"symbol": "btcusdt"}, lambda a: True),
        ({"exchange": "Binance-USDM"}, lambda a: True),
        (
            {"since": "2020-02-22T06:00:00Z", "until": "2020-02-22T09:00:00Z"},
            lambda a: "2020-02-22T06" <= a.timestamp < "2020-02-22T09",
        ),
        (
            {"rule": "whale", "until": "1582329600000"},  # before the day: none
            lambda a: False,
        ),
    ],
)
def test_filters_narrow_the_log(day: Fed, query: dict[str, str], expected: Any) -> None:
    listed = every(day, limit=5, **query)

    wanted = [a.id for a in day.latest.values() if expected(a)]
    assert sorted(a["id"] for a in listed) == sorted(wanted)
    if query.get("rule") == "surge":
        assert len(listed) == 34


@pytest.mark.parametrize(
    ("query", "param", "says"),
    [
        ({"limit": "0"}, "limit", "between 1 and 1000"),
        ({"limit": "many"}, "limit", "whole number"),
        ({"since": "yesterday"}, "since", "not a time"),
        ({"since": "2020-02-22T10:00:00Z", "until": "2020-02-22"}, "until", "later than since"),
        ({"cursor": "not-a-cursor"}, "cursor", "not one this server issued"),
        ({"rule": "whael"}, "rule", "not a rule here (configured: whale, surge)"),
        ({"rule": "bad\nname"}, "rule", "not a rule name"),
        ({"symbol": "BTC-USDT"}, "symbol", "not a symbol"),
        ({"exchange": "binance"}, "exchange", "not served here"),
        ({"severity": "critical"}, "severity", "unknown parameter"),
    ],
)
def test_bad_parameters_are_a_400_that_names_them(
    day: Fed, query: dict[str, str], param: str, says: str
) -> None:
    response = day.client.get("/api/alerts", query_string=query)

    assert response.status_code == 400
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["param"] == param
    assert says in body["error"]


# -- without alert rules ------------------------------------------------------------------


def test_without_alert_rules_the_log_is_empty_and_says_why(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    settings = load_settings({"db": str(tmp_path / "s.db"), "symbols": "BTCUSDT"}, env={})
    fed = build(settings, btc_frames)
    try:
        assert fed.engine.outbox is None
        body = get(fed)
        assert body == {
            "alerts": [],
            "count": 0,
            "next_cursor": None,
            "enabled": False,
            "note": body["note"],
        }
        assert "--alert-profile default" in body["note"]
        assert "[[alerts]]" in body["note"]
        # parameters are still checked
        assert get(fed, rule="whale", symbol="BTCUSDT")["count"] == 0
        assert fed.client.get("/api/alerts?limit=0").status_code == 400
    finally:
        close(fed)


# -- delivery states ----------------------------------------------------------------------


def test_each_alert_carries_its_delivery_state_per_destination(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    with Receiver().start() as good, Receiver().start() as bad:
        bad.answer(Reply(500))
        config = tmp_path / "spikewatch.toml"
        config.write_text(
            f"""
alert_profile = "default"
[destinations.hook]
kind = "webhook"
url = "{good.url()}"
secret = "s3cret"
max_per_minute = 0
[destinations.down]
kind = "webhook"
url = "{bad.url()}"
secret = "s3cret"
max_per_minute = 0
max_attempts = 1
"""
        )
        settings = load_settings(
            {"db": str(tmp_path / "s.db"), "symbols": "BTCUSDT,ETHUSDT"},
            env={},
            config_path=config,
        )
        # the spot recording's two alerts (one with three signals), pending everywhere
        fed = build(settings, btc_frames)
        try:
            listed = every(fed)
            assert len(listed) == 2
            assert [a["deliveries"] for a in listed] == [{"down": "pending", "hook": "pending"}] * 2
            assert fed.engine.outbox is not None
            worker = DeliveryWorker(fed.engine.outbox, settings.destinations)
            worker.start()
            try:
                wait_until(
                    lambda: all(
                        a["deliveries"] == {"hook": "sent", "down": "dead"} for a in every(fed)
                    ),
                    timeout=30,
                )
            finally:
                worker.stop()
            assert sorted(good.alert_ids()) == sorted(a["id"] for a in listed)
        finally:
            close(fed)


# -- the live stream ----------------------------------------------------------------------


class Stream:
    """One ``/api/stream`` client over a real socket; events read as they come."""

    def __init__(self, port: int, query: str = "") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", f"/api/stream{query}")
        self.response = self.conn.getresponse()  # the server has subscribed it by now
        assert self.response.status == 200
        assert self.response.getheader("Content-Type", "").startswith("text/event-stream")

    def events(self) -> Iterator[tuple[str, bytes]]:
        """``(event, data)`` of each event, comments skipped."""
        kind, data = "message", b""
        while line := self.response.fp.readline():
            line = line.rstrip(b"\r\n")
            if line.startswith(b"event: "):
                kind = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
            elif not line:
                if data:
                    yield kind, data
                kind, data = "message", b""

    def until(self, stop: str) -> list[tuple[str, Any]]:
        """Events up to the first of kind ``stop`` (included), their data decoded."""
        out: list[tuple[str, Any]] = []
        for kind, data in self.events():
            out.append((kind, json.loads(data)))
            if kind == stop:
                return out
        raise AssertionError(f"the stream ended before an {stop!r} event")

    def close(self) -> None:
        self.conn.close()


def test_alerts_reach_live_stream_clients_of_their_symbol_and_exchange(
    tmp_path: Path, btc_frames: list[bytes]
) -> None:
    settings = load_settings(
        {"db": str(tmp_path / "s.db"), "symbols": "BTCUSDT,ETHUSDT", "alert_profile": "default"},
        env={},
    )
    fed = build(settings, [])
    try:
        with waitress_server(create_app(settings, fed.engine), threads=8) as server:
            port = int(server.effective_port)
            every_symbol = Stream(port)
            btc = Stream(port, "?symbol=btcusdt&exchange=binance")
            eth = Stream(port, "?symbol=ETHUSDT")
            try:
                feed(fed.engine, btc_frames)  # the spot recording: BTCUSDT only
                fed.engine.hub.publish(Event("status", b"[]"))  # what every client gets
                assert len(fed.events) == 4  # two alerts opened, one updated twice
                for client in (every_symbol, btc):
                    got = [data for kind, data in client.until("status") if kind == "alert"]
                    assert got == [json.loads(msgspec.json.encode(event)) for event in fed.events]
                    assert [e["opened"] for e in got] == [True, False, False, True]
                    assert got[2]["alert"]["signals"] == 3
                    assert got[0]["alert"]["symbol"] == "BTCUSDT"
                    assert got[0]["alert"]["exchange"] == "binance"
                assert [kind for kind, _ in eth.until("status") if kind == "alert"] == []
            finally:
                for client in (every_symbol, btc, eth):
                    client.close()
                fed.engine.stop()  # ends the streams, so the server's threads can stop
    finally:
        close(fed)
