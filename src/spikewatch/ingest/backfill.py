"""Fetching trades the stream did not deliver, over the exchange's REST API.

Every reply is checked before it is used: it must be trades (not garbage, HTML or an error
object), start at the id asked for, and (on a venue whose ids are consecutive) hold the
symbol's consecutive ids. A reply that fails a check is retried within the REST client's
retry budget, like a server error (:class:`~spikewatch.ingest.rest.BadReply`).

Each look-up waits for its weight in the REST client's budget at a ``priority`` (by
default: gaps for :func:`fetch_range`, catch-ups for :func:`fetch_after`, warm starts for
:func:`fetch_recent`) until an optional ``deadline`` (then :class:`~spikewatch.ingest.rest.
Dropped`).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from itertools import pairwise

from spikewatch.core.model import Trade
from spikewatch.exchanges.base import Exchange, MalformedFrame, RestRequest
from spikewatch.ingest.budget import CATCH_UP, GAP, WARM_START, Priority
from spikewatch.ingest.rest import BadReply, RestClient, RestError

log = logging.getLogger(__name__)


def _checked(
    exchange: Exchange,
    symbol: str,
    *,
    from_id: int | None = None,
    need: bool = False,
    reach: int | None = None,
) -> Callable[[bytes], list[Trade]]:
    """A parser of trade replies that rejects what cannot be right: not trades; none when
    ``need``; a first id other than ``from_id``; ids that are not the symbol's consecutive
    ones; a last id short of ``reach``. A venue's id holes (``Capabilities.id_holes``:
    ids of fills it does not publish) may be skipped; on a venue whose ids are not
    consecutive, ids need only increase (from ``from_id`` on)."""
    capabilities = exchange.capabilities
    consecutive = capabilities.consecutive_ids
    holes = capabilities.id_holes

    def parse(body: bytes) -> list[Trade]:
        try:
            trades = exchange.parse_rest_trades(body, symbol)
        except MalformedFrame as exc:
            raise BadReply(f"not a list of trades ({str(exc)[:200]})") from None
        if not trades:
            if need:
                raise BadReply(f"no trades from id {from_id}, which exist")
            return trades
        first = trades[0].trade_id
        if from_id is not None and not (
            from_id <= first <= from_id + holes if consecutive else from_id <= first
        ):
            raise BadReply(f"trades from id {first}, not {from_id} as asked")
        for before, after in pairwise(trades):
            step = after.trade_id - before.trade_id
            if step < 1 or (consecutive and step > 1 + holes):
                raise BadReply(
                    f"trade ids go from {before.trade_id} to {after.trade_id}, "
                    f"not the {symbol} ids in order"
                )
        if reach is not None and trades[-1].trade_id < reach - holes:
            raise BadReply(f"trades up to id {trades[-1].trade_id}, not {reach} as asked")
        return trades

    return parse


async def _trades(
    rest: RestClient,
    request: RestRequest,
    parse: Callable[[bytes], list[Trade]],
    priority: Priority,
    deadline: float | None,
) -> list[Trade]:
    """One REST trade look-up, checked by ``parse``; raises :class:`RestError` when no
    usable reply came within the retry budget."""
    return await rest.fetch(
        request.path,
        parse,
        request.weight,
        request.headers,
        priority=priority,
        deadline=deadline,
    )


async def fetch_after(
    rest: RestClient,
    exchange: Exchange,
    symbol: str,
    from_id: int,
    *,
    priority: Priority = CATCH_UP,
    deadline: float | None = None,
) -> list[Trade]:
    """One page of trades of ``symbol`` from ``from_id`` on, oldest first; empty when
    there are none yet. Raises :class:`RestError` on failure."""
    request = exchange.trades_from_id(symbol, from_id, exchange.capabilities.rest_page)
    if request is None:
        raise RestError(f"{exchange.name} trades cannot be fetched by id")
    parse = _checked(exchange, symbol, from_id=from_id)
    return await _trades(rest, request, parse, priority, deadline)


async def fetch_range(
    rest: RestClient,
    exchange: Exchange,
    symbol: str,
    first_id: int,
    last_id: int,
    on_page: Callable[[list[Trade]], Awaitable[bool] | bool],
    *,
    priority: Priority = GAP,
    deadline: float | None = None,
) -> None:
    """Fetch trades ``first_id..last_id`` page by page; ``on_page`` gets each page in order
    (the last one with the first trade after ``last_id``, when the reply has it) and
    returns True when it needs no more. Raises :class:`RestError` on failure; returns
    when the range is done, whether or not ``on_page`` said so."""
    page_size = exchange.capabilities.rest_page
    next_id = first_id
    while next_id <= last_id:
        request = exchange.trades_from_id(symbol, next_id, page_size)
        if request is None:
            raise RestError(f"{exchange.name} trades cannot be fetched by id")
        # the trades before the live one that showed the gap exist: an empty reply is wrong
        parse = _checked(exchange, symbol, from_id=next_id, need=True)
        reply = await _trades(rest, request, parse, priority, deadline)
        # the trades of the range, and the one after it if the reply has it: the ids
        # between them are a hole the venue does not publish (Capabilities.id_holes)
        inside = bisect_right([t.trade_id for t in reply], last_id)
        page = reply[: inside + 1]
        done = on_page(page)
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        next_id = page[-1].trade_id + 1


async def fetch_recent(
    rest: RestClient,
    exchange: Exchange,
    symbol: str,
    count: int,
    *,
    priority: Priority = WARM_START,
    deadline: float | None = None,
) -> list[Trade]:
    """The latest ``count`` trades of ``symbol``, oldest first (pages back by id when one
    reply holds fewer, where the venue allows it)."""
    page_size = exchange.capabilities.rest_page
    request = exchange.recent_trades(symbol, min(count, page_size))
    if request is None:
        raise RestError(f"{exchange.name} has no recent-trades look-up")
    trades = await _trades(rest, request, _checked(exchange, symbol), priority, deadline)
    consecutive = exchange.capabilities.consecutive_ids
    while trades and len(trades) < count:
        first = trades[0].trade_id
        want = min(page_size, count - len(trades), first)
        older_request = exchange.trades_from_id(symbol, first - want, want) if want > 0 else None
        if older_request is None:
            break
        # where ids are consecutive, the older page is exactly the ids just before
        parse = _checked(
            exchange,
            symbol,
            from_id=first - want,
            need=consecutive,
            reach=first - 1 if consecutive else None,
        )
        try:
            older_page = await _trades(rest, older_request, parse, priority, deadline)
        except RestError as exc:  # the older trades cannot be had: warm with what came
            log.info("%s: %d recent trades only (%s)", symbol, len(trades), exc)
            break
        older = [t for t in older_page if t.trade_id < first]
        if not older:
            break
        trades = older + trades
    return trades[-count:]
