"""The picows feed against a real WebSocket server (``websockets``) on 127.0.0.1.

Each test runs its own event loop, server and client in it. What is checked is what the
client relies on: every complete message reaches the sink once, in order, with the other
messages of its read; fragmented messages are whole again; what is too big, a close from
the server, and a sink that fails each end the connection, with the right reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest
from picows import WSTransport
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from spikewatch.ingest.backoff import Backoff
from spikewatch.ingest.client import StreamClient
from spikewatch.ingest.feed import Feed, close, open_feed, wait_closed

from helpers import free_port

Handler = Callable[[ServerConnection], Awaitable[None]]

#: The size limit of the feeds here (bytes): small, so that "too big" is cheap to send.
LIMIT = 1000


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """Run ``scenario`` in a fresh event loop; any error the loop saw fails the test."""
    problems: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: problems.append(ctx))
        await asyncio.wait_for(scenario, timeout=30)

    asyncio.run(main())
    assert problems == [], "the event loop reported errors"


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """A WebSocket server on a free port running ``handler`` per connection; its URL.
    A handler that returns closes its connection normally (1000)."""

    async def guarded(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await handler(ws)

    async with serve(guarded, "127.0.0.1", 0, compression=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


async def connect(url: str, max_message: int = LIMIT) -> tuple[WSTransport, Feed]:
    return await open_feed(url, max_message=max_message, open_timeout=5, ping_interval=20)


class Sink:
    """Records every call the feed makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[bytes], int]] = []
        self._called = asyncio.Event()

    def __call__(self, messages: list[bytes], recv_ns: int) -> None:
        self.calls.append((list(messages), recv_ns))
        self._called.set()

    @property
    def messages(self) -> list[bytes]:
        return [m for batch, _ in self.calls for m in batch]

    async def wait_for(self, count: int) -> None:
        while len(self.messages) < count:
            self._called.clear()
            await self._called.wait()


async def attached(url: str) -> tuple[WSTransport, Sink]:
    """A feed connected to ``url`` with a recording sink attached."""
    transport, feed = await connect(url)
    sink = Sink()
    feed.attach(sink)
    return transport, sink


async def until_closed(ws: ServerConnection) -> None:
    """Keep the server's side open until the client closes."""
    await ws.wait_closed()


def test_messages_that_came_before_attach_are_delivered_on_attach_in_order() -> None:
    sent = [f'{{"n":{i}}}' for i in range(5)]
    all_sent = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        for text in sent:  # at once, maybe in the same read as the handshake response
            await ws.send(text)
        all_sent.set()
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, feed = await connect(url)
            await all_sent.wait()
            await asyncio.sleep(0.1)  # the client has read them by now; no sink yet
            sink = Sink()
            feed.attach(sink)
            # handed over inside attach(), all of them, in one call
            assert len(sink.calls) == 1
            assert sink.messages == [t.encode() for t in sent]
            assert sink.calls[0][1] > 0  # with the time they were received
            await close(transport)

    run(scenario())


def test_fragmented_messages_are_reassembled() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("first")
        await ws.send(["ab", "cd", "ef"])  # one text message in three frames
        await ws.send([b"\x00\x01", b"\x02"])  # one binary message in two
        await ws.send("last")
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            await sink.wait_for(4)
            assert sink.messages == [b"first", b"abcdef", b"\x00\x01\x02", b"last"]
            await close(transport)

    run(scenario())


def test_fragments_that_arrive_in_different_reads_make_one_message() -> None:
    async def fragments() -> AsyncIterator[str]:
        yield '{"part":'
        await asyncio.sleep(0.05)  # the client reads the first fragment alone
        yield '"one",'
        await asyncio.sleep(0.05)
        yield '"end":true}'

    async def handler(ws: ServerConnection) -> None:
        await ws.send(fragments())
        await ws.send("after")
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            await sink.wait_for(2)
            assert sink.messages == [b'{"part":"one","end":true}', b"after"]
            assert all(batch for batch, _ in sink.calls)  # never an empty delivery
            await close(transport)

    run(scenario())


def test_a_message_completed_in_a_later_read_gets_that_reads_receive_time() -> None:
    # raw frames, so that each write is one read at the client: a first fragment alone,
    # later the last fragment and a whole message together
    first_fragment = b"\x01\x02ab"  # TEXT, fin=0, "ab"
    rest = b"\x80\x02cd" + b"\x81\x01C"  # CONTINUATION fin=1 "cd"; TEXT fin=1 "C"
    later: list[int] = []

    async def handler(ws: ServerConnection) -> None:
        ws.transport.write(first_fragment)
        await asyncio.sleep(0.2)
        later.append(time.time_ns())
        ws.transport.write(rest)
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            await sink.wait_for(2)
            assert sink.messages == [b"abcd", b"C"]
            (sent_at,) = later
            # neither message was complete (nor "C" even sent) before sent_at
            early_by_ms = [(sent_at - recv_ns) / 1e6 for _, recv_ns in sink.calls]
            assert max(early_by_ms) <= 0, "stamped before it was received"
            transport.disconnect(graceful=False)
            await wait_closed(transport)

    run(scenario())


def test_a_fragmented_message_over_the_limit_closes_the_connection_as_oversized() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("small")
        await asyncio.sleep(0.05)
        # each fragment is within the limit, the message is not
        await ws.send(["x" * 400, "y" * 400, "z" * 400])
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            reason, oversized = await wait_closed(transport)
            assert oversized
            assert "size limit" in reason
            assert sink.messages == [b"small"]  # the big one is never handed over

    run(scenario())


def test_a_single_frame_over_the_limit_closes_as_oversized_and_is_never_handed_over() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("x" * (LIMIT + 1))
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            reason, oversized = await wait_closed(transport)
            assert oversized
            assert "size limit" in reason
            assert [len(m) for m in sink.messages] == []  # never handed over

    run(scenario())


def test_a_message_just_at_the_limit_is_delivered() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("x" * LIMIT)
        await ws.send(["y" * (LIMIT // 2), "z" * (LIMIT // 2)])
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            await sink.wait_for(2)
            assert [len(m) for m in sink.messages] == [LIMIT, LIMIT]
            await close(transport)
            _, oversized = await wait_closed(transport)
            assert not oversized

    run(scenario())


def test_a_close_from_the_server_is_answered_and_reported_with_its_code() -> None:
    answered: list[bool] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("bye soon")
        await ws.close(1001, "going away")
        answered.append(ws.protocol.close_rcvd is not None)  # the client replied

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            reason, oversized = await wait_closed(transport)
            assert "1001" in reason
            assert not oversized
            assert sink.messages == [b"bye soon"]
            await asyncio.sleep(0.05)  # let the server's close finish
        assert answered == [True]

    run(scenario())


def test_a_sink_that_raises_drops_the_connection_and_nothing_crashes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("boom")
        await asyncio.sleep(0.2)
        for i in range(10):  # the client is gone by now: nobody gets these
            await ws.send(f"late {i}")
        await until_closed(ws)

    def failing(messages: list[bytes], recv_ns: int) -> None:
        calls.append(list(messages))
        raise RuntimeError("handler bug")

    calls: list[list[bytes]] = []

    async def scenario() -> None:
        async with server(handler) as url:
            transport, feed = await connect(url)
            feed.attach(failing)
            reason, oversized = await wait_closed(transport)  # returns, does not raise
            assert isinstance(reason, str)
            assert not oversized
            assert transport.is_disconnected
            await close(transport)  # closing again is harmless

    with caplog.at_level(logging.ERROR, logger="spikewatch.ingest.feed"):
        run(scenario())
    assert len(calls) == 1
    assert calls[0][0] == b"boom"
    assert any("frame handler failed" in r.getMessage() for r in caplog.records)


def test_a_burst_arrives_whole_and_in_order_in_fewer_calls_than_messages() -> None:
    sent = [f'{{"e":"trade","t":{i},"pad":"{"x" * (i % 50)}"}}' for i in range(3000)]

    async def handler(ws: ServerConnection) -> None:
        for text in sent:
            await ws.send(text)
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, feed = await connect(url, max_message=1 << 20)
            sink = Sink()
            feed.attach(sink)
            await sink.wait_for(len(sent))
            await asyncio.sleep(0.05)  # nothing more comes
            assert sink.messages == [t.encode() for t in sent]
            assert len(sink.calls) < len(sent)  # reads carried many messages each
            assert all(batch for batch, _ in sink.calls)
            times = [recv_ns for _, recv_ns in sink.calls]
            assert times == sorted(times)  # receive times never go back
            await close(transport)

    run(scenario())


@pytest.mark.parametrize(
    ("last", "name"),
    [(b"\x89\x01p", "a ping"), (b"\x8a\x01p", "a pong")],
)
def test_a_read_ending_in_a_control_frame_is_handed_over_at_once(last: bytes, name: str) -> None:
    # picows answers pings itself unless told not to, and keeps pongs it expects: then the
    # read's last frame never reached the feed, and its messages waited for the next read
    async def handler(ws: ServerConnection) -> None:
        await asyncio.sleep(0.2)  # a read of its own, well after the handshake's
        ws.transport.write(b"\x81\x01a" + b"\x81\x01b" + last)  # two trades, then `name`
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            await asyncio.wait_for(sink.wait_for(2), timeout=1.0)  # not with a later read
            assert sink.messages == [b"a", b"b"], name
            transport.disconnect(graceful=False)
            await wait_closed(transport)

    run(scenario())


def test_a_ping_is_answered_with_its_payload() -> None:
    pongs: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        latency = await ws.ping(b"spikewatch?")  # websockets waits for the matching pong
        pongs.append(b"spikewatch?")
        await asyncio.wait_for(latency, timeout=2)
        await ws.send("after")
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            await asyncio.wait_for(sink.wait_for(1), timeout=3)
            assert sink.messages == [b"after"]
            assert pongs == [b"spikewatch?"]
            transport.disconnect(graceful=False)
            await wait_closed(transport)

    run(scenario())


def test_messages_before_a_protocol_error_in_the_same_read_are_handed_over() -> None:
    async def handler(ws: ServerConnection) -> None:
        # two trades, then a continuation frame that continues nothing
        ws.transport.write(b"\x81\x01a" + b"\x81\x01b" + b"\x80\x01x")
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            transport, sink = await attached(url)
            await asyncio.wait_for(sink.wait_for(2), timeout=2)
            assert sink.messages == [b"a", b"b"]
            reason, oversized = await wait_closed(transport)
            assert not oversized
            assert "continuation" in reason

    run(scenario())


# -- the reconnecting client over the feed: backoff after short connections, reachability


class Delays(Backoff):
    """The real backoff without jitter (every delay its ceiling), keeping the delays given."""

    def __init__(self, first: float, cap: float) -> None:
        super().__init__(first, cap, rand=lambda: 1.0)
        self.given: list[float] = []

    def next_delay(self) -> float:
        delay = super().next_delay()
        self.given.append(delay)
        return delay


async def until(check: Callable[[], bool]) -> None:
    """Wait on the loop until ``check()`` holds (the scenario's timeout bounds it)."""
    while not check():  # noqa: ASYNC110 - the client's status is a value, with no event
        await asyncio.sleep(0.005)


def quiet(frames: list[bytes], recv_ns: int) -> bool:
    return False


def test_connections_that_deliver_data_but_drop_soon_reconnect_without_climbing_to_the_cap() -> (
    None
):
    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"e":"trade"}')  # data, then the server closes at once

    async def scenario() -> None:
        async with server(handler) as url:
            backoff = Delays(first=0.01, cap=0.64)
            client = StreamClient(url, quiet, backoff=backoff, stable_after=10)
            task = asyncio.create_task(client.run())
            await until(lambda: client.status.connections >= 8)
            client.stop()
            await task
        # each reconnect comes within twice the first delay, not 0.01, 0.02 ... 0.64
        assert len(backoff.given) >= 7
        assert max(backoff.given) <= 0.02

    run(scenario())


def test_connections_that_close_before_any_data_back_off_further_each_time() -> None:
    async def handler(ws: ServerConnection) -> None:
        return  # accepted, then closed before sending anything

    async def scenario() -> None:
        async with server(handler) as url:
            backoff = Delays(first=0.01, cap=0.08)
            client = StreamClient(url, quiet, backoff=backoff, stable_after=10)
            task = asyncio.create_task(client.run())
            await until(lambda: client.status.connections >= 7)
            client.stop()
            await task
        assert backoff.given[:6] == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.08, 0.08])

    run(scenario())


def test_an_exchange_never_reached_is_reported_unreachable_in_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens: refused

    async def scenario() -> None:
        client = StreamClient(url, quiet, backoff=Delays(first=0.01, cap=0.02))
        task = asyncio.create_task(client.run())
        await until(lambda: client.status.failed_attempts >= 4)
        status = client.status
        client.stop()
        await task
        assert status.state in ("connecting", "waiting")
        assert status.unreachable
        assert not status.ever_connected
        assert status.connected_since is None
        assert status.last_error is not None

    with caplog.at_level(logging.DEBUG, logger="spikewatch.ingest.client"):
        run(scenario())
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, [r.getMessage() for r in loud]
    assert "cannot be reached from this machine" in loud[0].getMessage()
    assert "make demo" in loud[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]


def test_an_exchange_reached_once_is_not_reported_unreachable_when_it_goes_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"e":"trade"}')
        await until_closed(ws)

    async def scenario() -> None:
        async with server(handler) as url:
            client = StreamClient(url, quiet, backoff=Delays(first=0.01, cap=0.02))
            task = asyncio.create_task(client.run())
            await until(lambda: client.status.state == "connected")
            assert client.status.ever_connected
            assert not client.status.unreachable
        # the server is gone: every attempt is refused now
        await until(lambda: client.status.failed_attempts >= 2)
        status = client.status
        client.stop()
        await task
        assert status.ever_connected
        assert not status.unreachable
        assert status.state in ("connecting", "waiting")
        assert status.last_error is not None

    with caplog.at_level(logging.INFO, logger="spikewatch.ingest.client"):
        run(scenario())
    # a lost exchange is a warning per attempt, as before
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) >= 2
    assert all(r.levelno == logging.WARNING for r in failed)


def test_a_server_that_hangs_up_during_the_handshake_fails_the_connect_with_the_reason() -> None:
    async def scenario() -> None:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.transport.abort()  # a proxy or firewall that cuts the connection

        tcp = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        async with tcp:
            port = tcp.sockets[0].getsockname()[1]
            with pytest.raises(ConnectionError, match="during the WebSocket handshake"):
                await connect(f"ws://127.0.0.1:{port}/")

    run(scenario())
