"""The live hub: bounded per-client queues; a slow client is dropped, never waited for."""

from __future__ import annotations

from spikewatch.hub import DROPPED, Event, Hub


def event(n: int) -> Event:
    return Event("signal", b'{"n":%d}' % n, n)


def test_every_client_gets_every_event_in_order() -> None:
    hub = Hub(queue_size=100)
    a, b = hub.subscribe(), hub.subscribe()
    assert a is not None
    assert b is not None
    for n in range(50):
        hub.publish(event(n))
    for sub in (a, b):
        assert [sub.get(0).id for _ in range(50)] == list(range(50))  # type: ignore[union-attr]
        assert sub.get(0) is None


def test_a_client_that_stops_reading_is_dropped_and_the_others_go_on() -> None:
    hub = Hub(queue_size=10)
    slow, fast = hub.subscribe(), hub.subscribe()
    assert slow is not None
    assert fast is not None
    for n in range(25):
        hub.publish(event(n))  # never blocks, however full the slow queue is
        got = fast.get(0)
        assert got is not None
        assert got.id == n
    assert slow.dropped
    drained = []
    while (item := slow.get(0)) is not None:
        drained.append(item)
    assert drained[-1] is DROPPED
    stats = hub.stats()
    assert stats.dropped_slow == 1
    assert stats.clients == 1
    assert stats.events_published == 25


def test_a_dropped_client_gets_no_event_after_a_thrown_away_one() -> None:
    # it resumes after the last id it got (from the store): what it got must have no hole
    hub = Hub(queue_size=3)
    slow = hub.subscribe()
    assert slow is not None
    first = slow.get(0)  # nothing yet
    assert first is None
    hub.publish(event(1))
    got = slow.get(0)
    assert got is not None
    assert got.id == 1  # read: the client has 1
    for n in range(2, 7):  # 2, 3, 4 fill the queue; 5 finds it full: dropped
        hub.publish(event(n))
    rest = []
    while (item := slow.get(0)) is not None:
        rest.append(item)
    assert rest == [DROPPED]  # not 3, 4 after 2 was thrown away: it resumes after 1


def test_clients_beyond_the_limit_are_refused() -> None:
    hub = Hub(max_clients=2)
    first, second = hub.subscribe(), hub.subscribe()
    assert first is not None
    assert second is not None
    assert hub.subscribe() is None
    hub.unsubscribe(first)
    assert hub.subscribe() is not None


def test_events_are_framed_as_server_sent_events() -> None:
    assert event(7).encode() == b'event: signal\nid: 7\ndata: {"n":7}\n\n'
    assert Event("status", b"[]").encode() == b"event: status\ndata: []\n\n"


def test_closing_the_hub_ends_every_stream_and_refuses_new_ones() -> None:
    hub = Hub()
    sub = hub.subscribe()
    assert sub is not None
    hub.close()
    assert sub.get(0) is DROPPED
    assert hub.subscribe() is None


def test_a_stream_of_one_exchange_gets_its_signals_only_and_every_status() -> None:
    spot = Event("signal", b"{}", 1, symbol="BTCUSDT", exchange="binance")
    futures = Event("signal", b"{}", 2, symbol="BTCUSDT", exchange="binance-usdm")
    status = Event("status", b"[]")

    assert [e.id for e in (spot, futures) if e.wanted("BTCUSDT", "binance-usdm")] == [2]
    assert [e.id for e in (spot, futures) if e.wanted(None, "binance")] == [1]
    assert [e.id for e in (spot, futures) if e.wanted("BTCUSDT", None)] == [1, 2]
    assert not spot.wanted("ETHUSDT", "binance")
    assert status.wanted("ETHUSDT", "binance-usdm")
