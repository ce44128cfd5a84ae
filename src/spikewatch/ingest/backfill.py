"""Fetching trades the stream did not deliver, over the exchange's REST API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from spikewatch.core.model import Trade
from spikewatch.exchanges.base import Exchange, MalformedFrame, RestRequest
from spikewatch.ingest.rest import RestClient, RestError


async def _trades(
    rest: RestClient, exchange: Exchange, request: RestRequest, symbol: str
) -> list[Trade]:
    """One REST trade look-up, parsed; a reply that is not trades is a :class:`RestError`."""
    body = await rest.get(request.path, request.weight, request.headers)
    try:
        return exchange.parse_rest_trades(body, symbol)
    except MalformedFrame as exc:
        raise RestError(f"bad trades reply to {request.path}: {exc}") from None


async def fetch_range(
    rest: RestClient,
    exchange: Exchange,
    symbol: str,
    first_id: int,
    last_id: int,
    on_page: Callable[[list[Trade]], Awaitable[bool] | bool],
) -> None:
    """Fetch trades ``first_id..last_id`` page by page; ``on_page`` gets each page in order
    and returns True when it needs no more. Raises :class:`RestError` on failure."""
    page_size = exchange.capabilities.rest_page
    next_id = first_id
    while next_id <= last_id:
        request = exchange.trades_from_id(symbol, next_id, page_size)
        if request is None:
            raise RestError(f"{exchange.name} trades cannot be fetched by id")
        page = await _trades(rest, exchange, request, symbol)
        page = [t for t in page if next_id <= t.trade_id <= last_id]
        if not page or page[0].trade_id != next_id:
            raise RestError(f"the trades look-up did not return trade {next_id} of {symbol}")
        done = on_page(page)
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        next_id = page[-1].trade_id + 1


async def fetch_recent(
    rest: RestClient, exchange: Exchange, symbol: str, count: int
) -> list[Trade]:
    """The latest ``count`` trades of ``symbol``, oldest first (pages back by id when one
    reply holds fewer, where the venue allows it)."""
    page_size = exchange.capabilities.rest_page
    request = exchange.recent_trades(symbol, min(count, page_size))
    if request is None:
        raise RestError(f"{exchange.name} has no recent-trades look-up")
    trades = await _trades(rest, exchange, request, symbol)
    while trades and len(trades) < count:
        first = trades[0].trade_id
        want = min(page_size, count - len(trades), first)
        older_request = exchange.trades_from_id(symbol, first - want, want) if want > 0 else None
        if older_request is None:
            break
        older = [
            t for t in await _trades(rest, exchange, older_request, symbol) if t.trade_id < first
        ]
        if not older:
            break
        trades = older + trades
    return trades[-count:]
