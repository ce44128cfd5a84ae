"""The exchange's listing of pairs, read at start and every few minutes.

It makes ``--symbols`` definite (``ALL``, ``ALL:USDT``... or named symbols, which must be
listed) and tells the engine what changed since the last read: new pairs to watch,
delisted or halted ones to let go. A read that fails keeps the last good listing (and
says so in the status); an exchange without a listing keeps the named symbols as they are.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from collections.abc import Callable, Sequence

import msgspec

from spikewatch.core.model import iso_utc
from spikewatch.core.symbolsets import Resolved, SymbolInfo, SymbolSet, changes
from spikewatch.exchanges.base import Exchange, MalformedFrame
from spikewatch.ingest.budget import BACKGROUND, Priority
from spikewatch.ingest.rest import BadReply, RestClient

log = logging.getLogger(__name__)

#: ``on_change(added, removed)``: on the loop's thread, after a read that changed the set.
OnChange = Callable[[Sequence[str], Sequence[str]], None]


class ListingStatus(msgspec.Struct, frozen=True):
    """What ``/api/status`` says about the listing (``listing``)."""

    symbol_set: str  # as written: BTCUSDT,ETHUSDT or ALL:USDT
    watched: int  # symbols watched now
    reads: int = 0  # listings read
    failures: int = 0  # reads that failed (the last good listing kept)
    listed: int = 0  # symbols added since start by a new listing
    delisted: int = 0  # symbols let go since start (delisted or no longer trading)
    last_read: str | None = None  # ISO 8601 UTC
    last_error: str | None = None
    not_trading: list[str] = []  # named symbols the exchange lists but does not trade now


class UnknownSymbols(ValueError):
    """Named symbols the exchange does not list: ``symbols: XYZUSDT is not listed on
    binance (did you mean XRPUSDT?)``."""


def unknown_message(exchange: str, unknown: Sequence[str], listing: Sequence[SymbolInfo]) -> str:
    """One line naming the symbols ``exchange`` does not list, with close matches."""
    names = [info.symbol for info in listing]
    parts = []
    for symbol in unknown:
        close = difflib.get_close_matches(symbol, names, n=3, cutoff=0.75)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        parts.append(f"{symbol}{hint}")
    verb = "is" if len(unknown) == 1 else "are"
    return f"symbols: {', '.join(parts)} {verb} not listed on {exchange} (its exchangeInfo)"


class Listing:
    """Reads the listing of ``exchange`` over ``rest`` and resolves ``symbol_set``."""

    def __init__(
        self,
        exchange: Exchange,
        rest: RestClient,
        symbol_set: SymbolSet,
        *,
        interval: float = 300.0,
        on_change: OnChange | None = None,
        priority: Priority = BACKGROUND,
        quiet: bool = False,
    ) -> None:
        self.exchange = exchange
        self.rest = rest
        self.symbol_set = symbol_set
        self.interval = interval
        self.on_change = on_change
        self._priority = priority
        self._quiet = quiet  # a failed read is the caller's to tell (logged at debug)
        self._failing = False  # the last read failed (its warning was logged)
        self.symbols: tuple[str, ...] = symbol_set.named
        self.status = ListingStatus(symbol_set.describe(), len(self.symbols))

    def _set(self, **changes: object) -> None:
        self.status = msgspec.structs.replace(self.status, **changes)

    async def read(self) -> list[SymbolInfo] | None:
        """The exchange's listing now; None when it has none or the read failed (the
        status says why)."""
        request = self.exchange.listing()
        if request is None:
            return None

        def parse(body: bytes) -> list[SymbolInfo]:
            try:
                pairs = self.exchange.parse_listing(body)
            except MalformedFrame as exc:
                raise BadReply(f"not a listing: {exc}") from None
            if not pairs:
                raise BadReply("a listing without any pair")
            return pairs

        try:
            pairs = await self.rest.fetch(
                request.path,
                parse,
                request.weight,
                request.headers,
                priority=self._priority,
            )
        except Exception as exc:  # REST down, a bad reply: the last good listing stays
            self._set(failures=self.status.failures + 1, last_error=f"{type(exc).__name__}: {exc}")
            # one warning per run of failures (the status counts each), the rest at debug
            say = log.debug if self._quiet or self._failing else log.warning
            say("could not read the %s listing: %s", self.exchange.name, exc)
            self._failing = True
            return None
        self._failing = False
        self._set(reads=self.status.reads + 1, last_read=iso_utc(time.time_ns() // 1000))
        return pairs

    def resolve(self, pairs: Sequence[SymbolInfo]) -> Resolved:
        """The symbol set against ``pairs``; named symbols not listed raise
        :class:`UnknownSymbols`."""
        resolved = self.symbol_set.resolve(pairs)
        if resolved.unknown:
            raise UnknownSymbols(unknown_message(self.exchange.name, resolved.unknown, pairs))
        return resolved

    def apply(self, resolved: Resolved) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Make ``resolved`` the watched set; what it added and removed."""
        # named symbols stay watched even when halted: they come back
        target = resolved.symbols if self.symbol_set.is_all else self.symbol_set.named
        added, removed = changes(self.symbols, target)
        self.symbols = tuple(target)
        self._set(
            watched=len(target),
            listed=self.status.listed + (len(added) if self.status.reads > 1 else 0),
            delisted=self.status.delisted + len(removed),
            not_trading=list(resolved.halted),
            last_error=None,
        )
        return added, removed

    async def refresh(self) -> None:
        """Read the listing once and hand what changed to ``on_change``."""
        pairs = await self.read()
        if pairs is None:
            return
        try:
            resolved = self.resolve(pairs)
        except UnknownSymbols as exc:  # a named symbol delisted while running
            log.warning("%s", exc)
            self._set(last_error=str(exc))
            resolved = self.symbol_set.resolve(pairs)
        added, removed = self.apply(resolved)
        if added or removed:
            log.info(
                "%s listing: %d new symbol%s watched, %d let go",
                self.exchange.name,
                len(added),
                "" if len(added) == 1 else "s",
                len(removed),
            )
            if self.on_change is not None:
                self.on_change(added, removed)

    async def run(self, first_delay: float | None = None) -> None:
        """:meth:`refresh` every ``interval`` seconds, until cancelled."""
        await asyncio.sleep(self.interval if first_delay is None else first_delay)
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("reading the listing failed")
            await asyncio.sleep(self.interval)
