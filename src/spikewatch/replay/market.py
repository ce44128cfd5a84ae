"""A whole market from a few real recordings, by re-labelling (for "watch every pair"
offline), and the merge the simulator plays its symbols through.

:func:`market_tape` makes N symbols named as Binance names them (an upper-case base and a
quote asset, e.g. ``AAB0USDT``), quotes mixed (``USDT``, ``BTC``, ``FDUSD``...) so that
quote filters select a subset. Each symbol plays one real recording's trades, unchanged
but for:

* its name, and its own trade-id space (ids keep their steps, holes included);
* a phase: it starts at its own row of the recording and wraps around, so the recorded
  bursts do not hit every symbol at once; all symbols start at the same moment;
* a price scale, a power of ten that puts the recorded prices in a plausible band for
  its quote asset, and a quantity scale that keeps the notional plausible (both exact:
  integers in 1e-8 units, truncated, never below one unit);
* times moved on by the recording's span (plus a second) at every wrap, so they keep
  increasing.

Everything comes from ``seed``: the same sources, count and seed give the same market,
frame for frame. Nothing is materialised: a symbol is a small :class:`Listing` over a
compact, shared :class:`Source` (``array('q')`` columns), and its trades are made as
they are played, so 2,000 symbols build in milliseconds and cost what the recordings
cost. :class:`Mixer` merges the symbols' streams in time order; the simulator adds
streams to it (a symbol listed while running) and stops them (delisted, halted).
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from spikewatch.core.decimal import MAX_UNITS
from spikewatch.core.model import Side, Trade
from spikewatch.replay.tape import TapeEntry, trade_payload

#: Quote assets the market names symbols with by default (the first gets about half).
DEFAULT_QUOTES = ("USDT", "BTC", "FDUSD")

#: Per quote asset: the band of plausible prices (log10, low and high) and the rough
#: value of one unit in US dollars (log10), for quantities that keep notionals plausible.
QUOTE_BANDS: dict[str, tuple[float, float, float]] = {
    "USDT": (-4.0, 4.7, 0.0),
    "USDC": (-4.0, 4.7, 0.0),
    "FDUSD": (-4.0, 4.7, 0.0),
    "TUSD": (-4.0, 4.7, 0.0),
    "BUSD": (-4.0, 4.7, 0.0),
    "DAI": (-4.0, 4.7, 0.0),
    "EUR": (-4.0, 4.7, 0.0),
    "TRY": (-2.5, 6.0, -1.5),
    "BRL": (-3.0, 5.5, -0.7),
    "BTC": (-7.5, -1.3, 4.8),
    "ETH": (-6.5, -0.5, 3.4),
    "BNB": (-5.5, 0.0, 2.8),
}
_OTHER_BAND = (-4.0, 4.0, 0.0)
#: Quote assets a recorded symbol's name may end with, longest first (for base/quote).
KNOWN_QUOTES = tuple(sorted(QUOTE_BANDS, key=len, reverse=True))

#: Added to a recording's span at every wrap, microseconds.
WRAP_GAP_US = 1_000_000

_SIDES = (Side.BUY, Side.SELL)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

#: One played trade: its tape entry (the frame) and the trade (None: a recorded fill that
#: is no market trade, streamed but kept out of REST replies).
Played = tuple[TapeEntry, Trade | None]


def split_symbol(symbol: str) -> tuple[str, str]:
    """``(base, quote)`` of a Binance symbol by its quote suffix (``("BTC", "USDT")``);
    an unknown quote gives ``(symbol, "")``."""
    for quote in KNOWN_QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol, ""


@dataclass(frozen=True, slots=True)
class Source:
    """One recorded symbol's market trades as compact columns, oldest first."""

    name: str  # the recorded symbol, e.g. BTCUSDT
    ids: array[int]
    prices: array[int]  # 1e-8 units
    qtys: array[int]  # 1e-8 units
    times_us: array[int]
    sells: bytes  # 1: the taker sold
    typical_price: int  # the median price, 1e-8 units

    @classmethod
    def of(cls, trades: Iterable[Trade]) -> Source:
        """A source of one symbol's trades (in id order)."""
        ids, prices, qtys, times = array("q"), array("q"), array("q"), array("q")
        sells = bytearray()
        name = ""
        for trade in trades:
            name = name or trade.symbol
            ids.append(trade.trade_id)
            prices.append(trade.price)
            qtys.append(trade.qty)
            times.append(trade.time_us)
            sells.append(trade.side is Side.SELL)
        if not ids:
            raise ValueError("a market source needs at least one trade")
        return cls(name, ids, prices, qtys, times, bytes(sells), sorted(prices)[len(prices) // 2])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def span_us(self) -> int:
        """How much later one wrap plays, microseconds (the recording's span and a second)."""
        return self.times_us[-1] - self.times_us[0] + WRAP_GAP_US

    @property
    def id_span(self) -> int:
        """How far ids move on at one wrap."""
        return self.ids[-1] - self.ids[0] + 1


def sources_of_tape(tape: Iterable[TapeEntry]) -> list[Source]:
    """One source per symbol of a tape (its market trades; other fills are left out)."""
    from spikewatch.exchanges.binance import BinanceSpot  # spot and futures decode alike

    parser = BinanceSpot()
    by_symbol: dict[str, list[Trade]] = {}
    for entry in tape:
        trade = parser.parse(entry.payload)
        if isinstance(trade, Trade):
            by_symbol.setdefault(trade.symbol, []).append(trade)
    return [Source.of(trades) for trades in by_symbol.values()]


@dataclass(frozen=True, slots=True)
class Listing:
    """One symbol of a market: which source it plays, from which row, with which ids and
    scales (``price = source price * 10**price_exp``, truncated, at least one unit)."""

    symbol: str
    base: str
    quote: str
    source: int  # index into the market's sources
    phase: int  # the source row its first trade is
    first_id: int
    price_exp: int = 0
    qty_exp: int = 0


def _scaler(exp: int) -> Callable[[int], int]:
    if exp >= 0:
        factor = 10**exp
        return lambda units: min(units * factor, MAX_UNITS)
    divisor = 10**-exp
    return lambda units: max(units // divisor, 1)


def stream(
    source: Source,
    listing: Listing,
    start_us: int,
    *,
    endless: bool,
    encode: Callable[[Trade], bytes] = trade_payload,
    exchange: str = "binance",
) -> Iterator[Played]:
    """``listing``'s trades from ``start_us`` on: one pass over its source (from its
    phase, wrapping), or endlessly; each with its frame made by ``encode``."""
    n = len(source)
    ids, prices, qtys, times, sells = (
        source.ids,
        source.prices,
        source.qtys,
        source.times_us,
        source.sells,
    )
    span, id_span = source.span_us, source.id_span
    row = listing.phase % n
    base_t = start_us - times[row]
    base_id = listing.first_id - ids[row]
    price_of, qty_of = _scaler(listing.price_exp), _scaler(listing.qty_exp)
    symbol = listing.symbol
    left = n
    while True:
        time_us = base_t + times[row]
        trade_id = base_id + ids[row]
        trade = Trade(
            exchange,
            symbol,
            trade_id,
            price_of(prices[row]),
            qty_of(qtys[row]),
            time_us,
            _SIDES[sells[row]],
        )
        yield TapeEntry(symbol, trade_id, time_us // 1000, encode(trade)), trade
        left -= 1
        if not endless and not left:
            return
        row += 1
        if row == n:
            row, base_t, base_id = 0, base_t + span, base_id + id_span


class MarketTape:
    """N re-labelled symbols over shared sources (see the module docstring); the
    simulator serves one as it serves a recorded tape."""

    def __init__(self, sources: Sequence[Source], listings: Sequence[Listing], start_us: int):
        if not sources or not listings:
            raise ValueError("a market needs at least one source and one symbol")
        self.sources = tuple(sources)
        self.listings = tuple(listings)
        self.start_us = start_us
        self.by_symbol = {listing.symbol: listing for listing in self.listings}
        if len(self.by_symbol) != len(self.listings):
            raise ValueError("symbol names repeat")

    def __len__(self) -> int:
        """Trades in one pass: every symbol plays its source once."""
        return sum(len(self.sources[listing.source]) for listing in self.listings)

    @property
    def symbols(self) -> list[str]:
        """The symbols, in listing order."""
        return [listing.symbol for listing in self.listings]

    @property
    def first_ms(self) -> int:
        """When every symbol's first trade is, ms."""
        return self.start_us // 1000

    def streams(
        self,
        *,
        endless: bool,
        encode: Callable[[Trade], bytes] = trade_payload,
        exchange: str = "binance",
    ) -> list[tuple[str, Iterator[Played]]]:
        """Each symbol's stream of trades (see :func:`stream`), in listing order."""
        return [
            (
                listing.symbol,
                stream(
                    self.sources[listing.source],
                    listing,
                    self.start_us,
                    endless=endless,
                    encode=encode,
                    exchange=exchange,
                ),
            )
            for listing in self.listings
        ]

    def entries(
        self, *, endless: bool = False, encode: Callable[[Trade], bytes] = trade_payload
    ) -> Iterator[Played]:
        """Every symbol's trades merged in time order (ties: listing order)."""
        mixer = Mixer()
        for symbol, played in self.streams(endless=endless, encode=encode):
            mixer.add(played, [symbol])
        return (item for item in mixer if item is not None)


def _base_name(index: int) -> str:
    """``AAA0``, ``AAA1``, ... ``AAB0``...: three letters and a digit, unique per index."""
    letters, digit = divmod(index, 10)
    name = ""
    for _ in range(3):
        letters, rest = divmod(letters, 26)
        name = _LETTERS[rest] + name
    if letters:  # past 175,760 symbols: a longer name
        name = _base_name(letters - 1)[:-1] + name
    return f"{name}{digit}"


def scales(source: Source, quote: str, rng: random.Random) -> tuple[int, int]:
    """Price and quantity exponents that put ``source``'s prices in ``quote``'s band
    (a point in it drawn from ``rng``) and keep notionals about as large in dollars."""
    low, high, value = QUOTE_BANDS.get(quote, _OTHER_BAND)
    _, source_quote = split_symbol(source.name)
    source_value = QUOTE_BANDS.get(source_quote, _OTHER_BAND)[2]
    recorded = math.log10(max(source.typical_price, 1) / 1e8)
    price_exp = round(rng.uniform(low, high) - recorded)
    # notional in dollars: price * qty * value(quote) kept as recorded
    qty_exp = round(-price_exp + source_value - value)
    return price_exp, qty_exp


def market_tape(
    sources: Sequence[Source],
    n_symbols: int,
    quotes: Sequence[str] = DEFAULT_QUOTES,
    *,
    seed: int = 0,
    start_us: int | None = None,
) -> MarketTape:
    """A market of ``n_symbols`` symbols re-labelled from ``sources`` (see the module
    docstring); deterministic in ``seed``. ``start_us``: when every symbol's first trade
    is (default: the latest first trade of the sources)."""
    if n_symbols < 1:
        raise ValueError("a market needs at least one symbol")
    if not sources:
        raise ValueError("a market needs at least one recording")
    quotes = [q.upper() for q in quotes if q.strip()] or list(DEFAULT_QUOTES)
    rng = random.Random(seed)
    # the first quote gets about half the symbols, the others share the rest; each gets
    # one at least when there are enough symbols
    weights = [len(quotes) - 1 or 1] + [1] * (len(quotes) - 1)
    chosen = quotes[: min(n_symbols, len(quotes))]
    chosen += rng.choices(quotes, weights, k=n_symbols - len(chosen))
    listings = []
    for index, quote in enumerate(chosen):
        which = index % len(sources)
        source = sources[which]
        price_exp, qty_exp = scales(source, quote, rng)
        base = _base_name(index)
        listings.append(
            Listing(
                symbol=base + quote,
                base=base,
                quote=quote,
                source=which,
                phase=rng.randrange(len(source)),
                first_id=rng.randrange(1_000_000, 4_000_000_000),
                price_exp=price_exp,
                qty_exp=qty_exp,
            )
        )
    if start_us is None:
        start_us = max(source.times_us[0] for source in sources)
    return MarketTape(sources, listings, start_us)


class Mixer:
    """Streams of played trades merged by time: each stream keeps its own order, the
    earliest head goes first (ties: the stream added first). Streams may be added while
    it is iterated (a symbol listed while running). A stopped symbol's own streams end at
    once; its entries in a stream shared with other symbols (a recorded tape) are dropped
    from then on, for good, and such a stream ends when all its symbols are stopped.

    Iterating yields None for each dropped entry: a consumer that must not hold its event
    loop (the simulator) gets a turn to give even while nothing is played."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Played, Iterator[Played], frozenset[str]]] = []
        self._added = 0
        self._stopped: set[str] = set()
        #: the time of the last trade handed out (ms); where a new stream starts
        self.clock_ms = 0

    def add(self, played: Iterator[Played], symbols: Iterable[str] = ()) -> None:
        """Merge ``played`` in; ``symbols``: those it carries (one: its own stream; none
        given: any, a shared stream whose entries are filtered)."""
        first = next(played, None)
        if first is None:
            return
        carries = frozenset(symbols)
        heapq.heappush(self._heap, (first[0].time_ms, self._added, first, played, carries))
        self._added += 1

    def stop(self, symbol: str) -> None:
        """Drop ``symbol``'s entries from now on (its own streams end now)."""
        self._stopped.add(symbol)
        kept = [item for item in self._heap if item[4] != {symbol}]
        if len(kept) != len(self._heap):
            heapq.heapify(kept)
            self._heap[:] = kept

    def __iter__(self) -> Iterator[Played | None]:
        heap, stopped = self._heap, self._stopped
        while heap:
            _, order, head, played, carries = heap[0]
            if len(carries) > 1 and carries <= stopped:
                heapq.heappop(heap)  # every symbol it carries is stopped: it ends
                yield None
                continue
            following = next(played, None)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (following[0].time_ms, order, following, played, carries))
            entry = head[0]
            if len(carries) != 1 and entry.symbol in stopped:
                yield None  # a stopped symbol's entry in a shared stream
                continue
            self.clock_ms = entry.time_ms
            yield head


def listing_like(
    symbol: str,
    source_index: int,
    source: Source,
    *,
    seed: int,
    first_id: int | None = None,
    template: Listing | None = None,
) -> Listing:
    """A listing of a new ``symbol`` over ``source`` (scaled as ``template``, if given),
    its phase and first id drawn from ``seed`` and the name (or ``first_id`` given: a
    symbol listed again continues its ids)."""
    rng = random.Random(f"{seed}:{symbol}")
    base, quote = split_symbol(symbol)
    return Listing(
        symbol=symbol,
        base=base,
        quote=quote,
        source=source_index,
        phase=rng.randrange(len(source)),
        first_id=first_id if first_id is not None else rng.randrange(1_000_000, 4_000_000_000),
        price_exp=template.price_exp if template else 0,
        qty_exp=template.qty_exp if template else 0,
    )


__all__ = [
    "DEFAULT_QUOTES",
    "Listing",
    "MarketTape",
    "Mixer",
    "Played",
    "Source",
    "listing_like",
    "market_tape",
    "sources_of_tape",
    "split_symbol",
    "stream",
]
