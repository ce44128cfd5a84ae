"""Fetching trades the stream did not deliver, over the exchange's REST API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from spikewatch.core.model import Trade
from spikewatch.exchanges.base import Exchange, MalformedFrame
from spikewatch.exchanges.binance import REST_PAGE, TRADES_WEIGHT
from spikewatch.ingest.rest import RestClient, RestError


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
    next_id = first_id
    while next_id <= last_id:
        body = await rest.get(
            exchange.historical_trades_path(symbol, next_id, REST_PAGE), TRADES_WEIGHT
        )
        try:
            page = exchange.parse_rest_trades(body, symbol)
        except MalformedFrame as exc:
            raise RestError(f"bad historicalTrades reply: {exc}") from None
        page = [t for t in page if next_id <= t.trade_id <= last_id]
        if not page or page[0].trade_id != next_id:
            raise RestError(f"historicalTrades did not return trade {next_id} of {symbol}")
        done = on_page(page)
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        next_id = page[-1].trade_id + 1


async def fetch_recent(
    rest: RestClient, exchange: Exchange, symbol: str, count: int
) -> list[Trade]:
    """The latest ``count`` trades of ``symbol``, oldest first (pages back when > 1000)."""
    body = await rest.get(exchange.recent_trades_path(symbol, count), TRADES_WEIGHT)
    try:
        trades = exchange.parse_rest_trades(body, symbol)
    except MalformedFrame as exc:
        raise RestError(f"bad trades reply: {exc}") from None
    while trades and len(trades) < count:
        first = trades[0].trade_id
        want = min(REST_PAGE, count - len(trades), first)
        if want <= 0:
            break
        body = await rest.get(
            exchange.historical_trades_path(symbol, first - want, want), TRADES_WEIGHT
        )
        try:
            older = exchange.parse_rest_trades(body, symbol)
        except MalformedFrame as exc:
            raise RestError(f"bad historicalTrades reply: {exc}") from None
        older = [t for t in older if t.trade_id < first]
        if not older:
            break
        trades = older + trades
    return trades[-count:]
