"""The hub's push thread: every live client gets what it wants once, in order, in few
writes; a client that falls too far behind is cut and counted, the others go on."""

from __future__ import annotations

import threading

from spikewatch.hub import KEEPALIVE, Client, Event, Hub
from spikewatch.web.outlets import BufferOutlet

from helpers import wait_until


class Collector(threading.Thread):
    """Drains an outlet as a request thread does, keeping each write."""

    def __init__(
        self, outlet: BufferOutlet, hub: Hub | None = None, client: Client | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.outlet = outlet
        self.writes: list[bytes] = []
        self.done = False
        self.hub, self.client = hub, client

    def run(self) -> None:
        for data in self.outlet.stream():
            self.writes.append(data)
        if self.hub is not None and self.client is not None:
            self.hub.detach(self.client)  # the response is over, as the web layer says
        self.done = True

    @property
    def received(self) -> bytes:
        return b"".join(self.writes)


def signal(n: int, symbol: str = "BTCUSDT", exchange: str = "binance") -> Event:
    return Event("signal", b'{"n":%d}' % n, n, symbol, exchange)


def live_client(hub: Hub, symbol: str | None = None, exchange: str | None = None) -> Collector:
    outlet = BufferOutlet()
    client = hub.attach(outlet, symbol, exchange)
    assert client is not None
    hub.go_live(client, 0)
    collector = Collector(outlet, hub, client)
    collector.start()
    return collector


def test_each_live_client_gets_each_event_once_in_order() -> None:
    hub = Hub()
    a, b = live_client(hub), live_client(hub)
    events = [signal(n) for n in range(1, 301)]
    for event in events:
        hub.publish(event)
    expected = b"".join(e.encode() for e in events)
    wait_until(lambda: a.received == expected and b.received == expected, timeout=10)
    assert hub.stats().events_published == 300
    hub.close()
    wait_until(lambda: a.done and b.done, timeout=10)
    assert hub.wait_closed(5)


def test_filters_narrow_signals_and_every_client_gets_status() -> None:
    hub = Hub()
    spot = live_client(hub, exchange="binance")
    eth = live_client(hub, symbol="ETHUSDT")
    events = [
        signal(1, "BTCUSDT", "binance"),
        signal(2, "ETHUSDT", "binance-usdm"),
        Event("status", b"[]"),
        signal(3, "ETHUSDT", "binance"),
    ]
    for event in events:
        hub.publish(event)
    status = Event("status", b"[]").encode()
    wait_until(lambda: spot.received.endswith(events[3].encode()), timeout=10)
    wait_until(lambda: eth.received.endswith(events[3].encode()), timeout=10)
    assert spot.received == events[0].encode() + status + events[3].encode()
    assert eth.received == events[1].encode() + status + events[3].encode()
    hub.close()


def test_what_comes_during_a_replay_follows_it_without_what_the_replay_sent() -> None:
    hub = Hub()
    outlet = BufferOutlet()
    client = hub.attach(outlet)
    assert client is not None
    for n in range(1, 6):  # published while the client's replay from the store runs
        hub.publish(signal(n))
    collector = Collector(outlet)
    collector.start()
    hub.go_live(client, 3)  # the replay sent signals up to 3
    expected = signal(4).encode() + signal(5).encode()
    wait_until(lambda: collector.received == expected, timeout=10)
    hub.publish(signal(6))
    wait_until(lambda: collector.received == expected + signal(6).encode(), timeout=10)
    hub.close()


def test_a_client_that_falls_too_far_behind_is_cut_and_the_others_go_on() -> None:
    hub = Hub(max_unsent=10_000)
    fast = live_client(hub)
    stuck = BufferOutlet()  # nobody drains it: a client that stopped reading
    client = hub.attach(stuck)
    assert client is not None
    hub.go_live(client, 0)
    events = [Event("signal", b'"%s"' % (b"x" * 1000), n) for n in range(1, 16)]
    for n, event in enumerate(events):
        hub.publish(event)
        wait_until(lambda n=n: fast.received.count(b"event: signal") > n, timeout=10)  # type: ignore[misc]
    wait_until(lambda: hub.stats().dropped_slow == 1, timeout=10)
    assert fast.received == b"".join(e.encode() for e in events)
    assert hub.stats().clients == 1
    assert stuck.unsent() == 0  # what it had queued was thrown away whole
    assert list(stuck.stream()) == []  # and its stream is over
    hub.close()


def test_an_idle_stream_gets_keep_alives() -> None:
    hub = Hub()
    outlet = BufferOutlet()
    client = hub.attach(outlet, keepalive=0.2)
    assert client is not None
    hub.go_live(client, 0)
    collector = Collector(outlet)
    collector.start()
    wait_until(lambda: collector.received.count(KEEPALIVE) >= 2, timeout=10)
    hub.close()


def test_closing_the_hub_ends_every_stream_and_a_reopened_hub_serves_again() -> None:
    hub = Hub()
    first = live_client(hub)
    hub.close()
    wait_until(lambda: first.done, timeout=10)
    assert hub.attach(BufferOutlet()) is None  # refused while closed
    hub.max_clients = 10  # taken back into service (as the dashboard test does)
    second = live_client(hub)
    hub.publish(signal(1))
    wait_until(lambda: second.received == signal(1).encode(), timeout=10)
    hub.close()
    wait_until(lambda: second.done, timeout=10)


def test_clients_beyond_the_limit_are_refused_whatever_their_kind() -> None:
    hub = Hub(max_clients=2)
    assert hub.subscribe() is not None
    pushed = hub.attach(BufferOutlet())
    assert pushed is not None
    assert hub.attach(BufferOutlet()) is None
    assert hub.subscribe() is None
    hub.detach(pushed)
    assert hub.attach(BufferOutlet()) is not None
    hub.close()
