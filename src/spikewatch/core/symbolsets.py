"""Symbol sets: what ``--symbols`` names, made into the symbols to watch from a listing.

``--symbols BTCUSDT,ETHUSDT`` names symbols; ``--symbols ALL`` every pair the exchange
lists as trading; ``ALL:USDT`` (or ``ALL:USDT,BTC``) every trading pair quoted in those
assets. The listing is the exchange's own (Binance: ``exchangeInfo``), read at start and
again every few minutes: a new listing is watched from then on, a delisted or halted pair
let go, and a named symbol the exchange does not list is an error (Binance itself answers
a subscription to it silently, with no trade ever). Pure: the listing comes in as data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import msgspec

#: A symbol as exchanges spell them (upper case, letters and digits).
SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")
#: An asset (a quote filter's element).
ASSET = re.compile(r"^[A-Z0-9]{2,12}$")
#: What Binance calls a pair that trades (``status`` of exchangeInfo's symbols).
TRADING = "TRADING"


class SymbolInfo(msgspec.Struct, frozen=True):
    """One pair of an exchange's listing."""

    symbol: str
    status: str  # "TRADING", or e.g. "BREAK", "HALT", "SETTLING" (not trading)
    base: str
    quote: str

    @property
    def trading(self) -> bool:
        """Whether the pair trades now."""
        return self.status == TRADING


class SymbolSet(msgspec.Struct, frozen=True):
    """Named symbols, or every trading pair (of some quote assets)."""

    named: tuple[str, ...] = ()
    #: None: only ``named``; (): every trading pair; else every trading pair quoted in one
    #: of these assets
    quotes: tuple[str, ...] | None = None

    @property
    def is_all(self) -> bool:
        """Whether the set is the whole market (or a quote filter of it)."""
        return self.quotes is not None

    def describe(self) -> str:
        """How a user wrote it: ``BTCUSDT,ETHUSDT``, ``ALL`` or ``ALL:USDT,BTC``."""
        if self.quotes is None:
            return ",".join(self.named)
        return "ALL" + (":" + ",".join(self.quotes) if self.quotes else "")

    def resolve(self, listing: Iterable[SymbolInfo]) -> Resolved:
        """The symbols to watch given ``listing``, and the named ones it does not hold
        (or holds but not trading)."""
        pairs = {info.symbol: info for info in listing}
        if self.quotes is None:
            unknown = tuple(s for s in self.named if s not in pairs)
            halted = tuple(s for s in self.named if s in pairs and not pairs[s].trading)
            watch = tuple(s for s in self.named if s in pairs and pairs[s].trading)
            return Resolved(watch, unknown, halted)
        quotes = set(self.quotes)
        watch = tuple(
            sorted(
                s
                for s, info in pairs.items()
                if info.trading and (not quotes or info.quote in quotes)
            )
        )
        return Resolved(watch, (), ())


class Resolved(msgspec.Struct, frozen=True):
    """A symbol set made definite by a listing."""

    symbols: tuple[str, ...]  # to watch, in order
    unknown: tuple[str, ...]  # named, but not listed at all
    halted: tuple[str, ...]  # named and listed, but not trading now


def parse_symbol_set(items: Sequence[str]) -> SymbolSet:
    """``("BTCUSDT", "ETHUSDT")``, ``("ALL",)`` or ``("ALL:USDT,BTC",)`` (upper case);
    ValueError naming what is wrong."""
    if not items:
        raise ValueError("at least one symbol is needed")
    head = items[0]
    if head == "ALL" or head.startswith("ALL:"):
        if len(items) > 1:
            raise ValueError(
                f"{head} stands alone: it cannot be combined with other symbols "
                f"({', '.join(items[1:])}); write ALL:<quote>,<quote> to filter by quote asset"
            )
        quotes = tuple(q.strip() for q in head[4:].split(",") if q.strip()) if ":" in head else ()
        if ":" in head and not quotes:
            raise ValueError("ALL: needs at least one quote asset after the colon, e.g. ALL:USDT")
        for quote in quotes:
            if not ASSET.match(quote):
                raise ValueError(f"{quote!r} is not an asset (in {head})")
        if len(set(quotes)) != len(quotes):
            raise ValueError(f"a quote asset is repeated in {head}")
        return SymbolSet(quotes=quotes)
    for symbol in items:
        if symbol.startswith("ALL"):
            raise ValueError(f"{symbol} stands alone: it cannot be combined with other symbols")
        if not SYMBOL.match(symbol):
            if symbol.isascii() and symbol.isalnum():
                plural = "" if len(symbol) == 1 else "s"
                raise ValueError(
                    f"{symbol!r} is {len(symbol)} character{plural} long; a symbol has 2 to 30"
                )
            raise ValueError(f"{symbol!r} is not a symbol")
    if len(set(items)) != len(items):
        raise ValueError("a symbol is repeated")
    return SymbolSet(named=tuple(items))


def changes(before: Sequence[str], after: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The symbols ``after`` adds to ``before`` and those it lets go, each in order."""
    old, new = set(before), set(after)
    return tuple(s for s in after if s not in old), tuple(s for s in before if s not in new)
