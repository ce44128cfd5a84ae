"""Detectors: plain objects that see one symbol's trades in order and return signals.

Every detector has ``key`` (stable, used in signal ids), ``update(trade) -> Signal | None``,
and ``snapshot()`` / ``restore()`` so its state can survive a restart. A detector may also
have ``update_batch(batch) -> list[Signal]`` (see :class:`BatchDetector`), which the
pipeline then uses for a :class:`~spikewatch.core.model.TradeBatch`.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from decimal import Decimal
from itertools import count, islice
from typing import Any, Protocol, runtime_checkable

import msgspec

from spikewatch.core import accel
from spikewatch.core.decimal import SCALE, units_to_float
from spikewatch.core.model import Side, Signal, Trade, TradeBatch, VolumeSpikeSignal, iso_utc


class Detector(Protocol):
    """What the kernel needs of a detector."""

    #: stable, in signal ids: the kind and every parameter that changes its decisions
    key: str
    #: its kind, or the name of its ``[detectors.<name>]`` table (alert rules name it)
    name: str

    def update(self, trade: Trade) -> Signal | None:
        """Feed the next trade of this detector's symbol; return a signal if it fires."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The state needed to continue exactly where this detector is now (JSON-safe)."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot` taken with the same parameters."""
        ...

    def reset(self) -> None:
        """Forget all state: warm up again (after trades were lost)."""
        ...


@runtime_checkable
class BatchDetector(Detector, Protocol):
    """A detector that can also take many trades of its symbol at once."""

    def update_batch(self, batch: TradeBatch) -> list[Signal]:
        """Feed the batch's trades in order; return the signals, in trade order. Must
        decide exactly as :meth:`update` would, trade after trade, and share its state."""
        ...


def _threshold_key(threshold: Decimal) -> str:
    return format(threshold.normalize(), "f")


class VolumeSpikeDetector:
    """The original rule: a trade is a spike when its quantity is greater than ``threshold``
    times the mean quantity of the ``window`` trades before it.

    Exact and O(1) per trade: quantities are integer 1e-8 units in a ring buffer with a
    running integer sum, and ``q > t * sum / w`` is decided as ``q * w * den > num * sum``
    with ``t = num / den``. Nothing fires until ``window`` trades have been seen.
    """

    signal_type = "VolumeSpike"

    __slots__ = (
        "_buf",
        "_den_w",
        "_filled",
        "_num",
        "_pos",
        "_sum",
        "_threshold_float",
        "key",
        "name",
        "threshold",
        "window",
    )

    def __init__(self, window: int = 200, threshold: Decimal | int | str = 10) -> None:
        threshold = Decimal(threshold)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not threshold.is_finite() or threshold <= 0:
            raise ValueError(f"threshold must be a positive finite number, got {threshold}")
        self.window = window
        self.threshold = threshold
        self._threshold_float = float(threshold)
        self.key = f"volume_spike-w{window}-x{_threshold_key(threshold)}"
        self.name = "volume_spike"  # its config table's name (alert rules name it)
        num, den = threshold.as_integer_ratio()
        self._num = num
        self._den_w = den * window
        self._buf = array("q", bytes(8 * window))
        self._pos = 0
        self._filled = 0
        self._sum = 0

    def update(self, trade: Trade) -> Signal | None:
        """Decide on ``trade`` against the window before it, then slide the window."""
        qty = trade.qty
        pos = self._pos
        buf = self._buf
        signal = None
        total = self._sum
        if self._filled == self.window:
            if qty * self._den_w > self._num * total:
                signal = self._signal(
                    trade.exchange,
                    trade.symbol,
                    trade.trade_id,
                    trade.price,
                    qty,
                    trade.time_us,
                    trade.side,
                    total,
                )
            self._sum = total + qty - buf[pos]
        else:
            self._sum = total + qty
            self._filled += 1
        buf[pos] = qty
        pos += 1
        self._pos = 0 if pos == self.window else pos
        return signal

    def update_batch(self, batch: TradeBatch, *, vectorised: bool = True) -> list[Signal]:
        """Feed ``batch`` (trades of this detector's symbol, in order): the same signals and
        the same state as :meth:`update` on each of its trades, in a fraction of the time.

        With numpy installed (and ``vectorised``), window sums come from an int64 running
        sum, after checking that no product or sum can reach 2**63; otherwise, and
        whenever one could, a plain loop over Python ints decides.
        """
        qtys = batch.qtys
        n = len(qtys)
        if n == 0:
            return []
        window = self.window
        if n * 4 <= window:  # a short run: update()'s ring buffer, without the O(window) set-up
            return self._signals(batch, self._slide(qtys), 0)
        history = self._history()
        hits: Sequence[tuple[int, int]] = ()
        if len(history) + n > window:
            np = accel.np if vectorised and n >= accel.NUMPY_FROM else None
            found = None
            if np is not None:
                found = _spikes_numpy(np, history, qtys, window, self._num, self._den_w)
            hits = (
                found
                if found is not None
                else _spikes_pure(history, qtys, window, self._num, self._den_w)
            )
        # The window after the batch: its last `window` quantities, oldest first.
        keep = min(window, len(history) + n)
        if n >= keep:
            tail = qtys[n - keep :]
        else:
            tail = array("q", history[len(history) - (keep - n) :])
            tail.extend(qtys)
        self._buf[:keep] = tail
        self._filled = keep
        self._pos = keep % window
        self._sum = sum(tail)
        return self._signals(batch, hits, len(history))

    def _slide(self, qtys: Sequence[int]) -> list[tuple[int, int]]:
        """:meth:`update`'s decisions and window for each of ``qtys`` in turn: the
        positions that fire, each with the window's sum before it."""
        buf, pos, total, filled = self._buf, self._pos, self._sum, self._filled
        window, num, den_w = self.window, self._num, self._den_w
        hits = []
        for i, qty in enumerate(qtys):
            if filled == window:
                if qty * den_w > num * total:
                    hits.append((i, total))
                total += qty - buf[pos]
            else:
                total += qty
                filled += 1
            buf[pos] = qty
            pos += 1
            if pos == window:
                pos = 0
        self._pos, self._sum, self._filled = pos, total, filled
        return hits

    def _signals(
        self, batch: TradeBatch, hits: Sequence[tuple[int, int]], offset: int
    ) -> list[Signal]:
        """The signals of ``hits`` (position - ``offset`` in the batch, window sum)."""
        if not hits:
            return []
        qtys = batch.qtys
        sides = (Side.BUY, Side.SELL)
        ex, sym = batch.exchange, batch.symbol
        ids, prices, times, makers = (
            batch.trade_ids,
            batch.prices,
            batch.times_us,
            batch.buyer_is_maker,
        )
        out = []
        for pos, total in hits:
            i = pos - offset
            out.append(
                self._signal(ex, sym, ids[i], prices[i], qtys[i], times[i], sides[makers[i]], total)
            )
        return out

    def _history(self) -> array[int]:
        """The window's quantities, oldest first."""
        n, pos, window, buf = self._filled, self._pos, self.window, self._buf
        if n < window:
            return buf[:n]  # filled from 0 in order: see update() and update_batch()
        return buf[pos:] + buf[:pos]

    def _signal(
        self,
        exchange: str,
        symbol: str,
        trade_id: int,
        price: int,
        qty: int,
        time_us: int,
        side: Side,
        total: int,
    ) -> Signal:
        window = self.window
        return VolumeSpikeSignal(
            id=f"{exchange}:{symbol}:{self.key}:{trade_id}",
            exchange=exchange,
            symbol=symbol,
            detector=self.key,
            trade_id=trade_id,
            timestamp=iso_utc(time_us),
            time_us=time_us,
            price=units_to_float(price),
            volume=units_to_float(qty),
            quote_volume=_quote_volume(price, qty),
            side=side.value,
            average_volume=total / (SCALE * window),
            ratio=qty * window / total,
            window=window,
            threshold=self._threshold_float,
        )

    @property
    def warmed_up(self) -> bool:
        """True once ``window`` trades have been seen, so the detector can fire."""
        return self._filled == self.window

    def snapshot(self) -> dict[str, Any]:
        """The window's quantities, oldest first, with the parameters they belong to."""
        n, pos, window = self._filled, self._pos, self.window
        start = pos - n if n < window else pos
        qtys = [self._buf[(start + i) % window] for i in range(n)]
        return {"key": self.key, "qtys": qtys}

    def restore(self, state: dict[str, Any]) -> None:
        """Refill the window from :meth:`snapshot`; refuses a snapshot of other parameters."""
        if state.get("key") != self.key:
            raise ValueError(f"snapshot is for {state.get('key')!r}, not {self.key!r}")
        qtys = [int(q) for q in state["qtys"]][-self.window :]
        if any(q <= 0 for q in qtys):
            raise ValueError("snapshot holds a non-positive quantity")
        self._buf = array("q", bytes(8 * self.window))
        self._buf[: len(qtys)] = array("q", qtys)
        self._filled = len(qtys)
        self._pos = len(qtys) % self.window
        self._sum = sum(qtys)

    def reset(self) -> None:
        """Forget the window (after a gap that could not be filled): warm up again."""
        self._filled = 0
        self._pos = 0
        self._sum = 0


class DetectorParams(msgspec.Struct, frozen=True, kw_only=True):
    """A ``[detectors.<name>]`` table as a detector's builder gets it: the table's name,
    ``window`` and ``threshold`` (the flat settings where the table gives none), the
    kind's own keys in ``options``, and how quote values become USD."""

    name: str
    window: int = 200
    threshold: Decimal = Decimal(10)
    options: dict[str, Any] = {}
    usd: Any = None  # a spikewatch.core.orders.UsdValue, or None for stable quotes only


DetectorBuilder = Callable[[DetectorParams], Detector]
"""Makes a detector from its table; raises ValueError (naming the key) for bad values."""


def _volume_spike(params: DetectorParams) -> Detector:
    if params.options:
        raise ValueError(f"unknown key {sorted(params.options)[0]!r} (it takes window, threshold)")
    detector = VolumeSpikeDetector(params.window, params.threshold)
    detector.name = params.name
    return detector


#: Detector kinds a ``[detectors.<name>]`` config table may name (``kind``); a new
#: detector is one more entry (``notional`` and ``surge`` register themselves in
#: :mod:`spikewatch.core.profile`).
DETECTORS: dict[str, DetectorBuilder] = {"volume_spike": _volume_spike}


#: Below this, price * qty has at most 28 digits: Decimal's default precision holds it
#: exactly, so int true division (correctly rounded) gives the same float, much faster.
_EXACT_PRODUCT: int = 10**28
_SCALE_SQUARED: int = SCALE * SCALE


def _quote_volume(price: int, qty: int) -> float:
    """price x qty in the quote asset, as the float nearest the exact value."""
    product = price * qty
    if 0 <= product < _EXACT_PRODUCT:
        quote: float = product / _SCALE_SQUARED
        return quote
    return float(Decimal(price) * Decimal(qty) / _SCALE_SQUARED)


def _spikes_pure(
    history: Sequence[int], qtys: Sequence[int], window: int, num: int, den_w: int
) -> list[tuple[int, int]]:
    """Positions in ``history + qtys`` (``len(history) <= window``) of the quantities that
    fire, each with the sum of the ``window`` quantities before it: unbounded ints."""
    seq = list(history)
    seq.extend(qtys)
    total = sum(seq[:window])
    hits = []
    for j, qty, old in zip(count(window), islice(seq, window, None), seq):
        if qty * den_w > num * total:
            hits.append((j, total))
        total += qty - old
    return hits


def _spikes_numpy(
    np: Any, history: array[int], qtys: array[int], window: int, num: int, den_w: int
) -> list[tuple[int, int]] | None:
    """As :func:`_spikes_pure`, vectorised on int64; None if a value could overflow."""
    seq = np.concatenate((np.frombuffer(history, np.int64), np.frombuffer(qtys, np.int64)))
    top = max(int(seq.max()), -int(seq.min()))  # quantities are > 0; to be safe anyway
    # Every running sum is at most len * top, every window sum at most window * top.
    limit = accel.INT64_LIMIT
    if len(seq) * top >= limit or top * den_w >= limit or num * window * top >= limit:
        return None
    sums = np.cumsum(seq)  # sums[k] = seq[0] + .. + seq[k]
    # The window before position j (j >= window) is seq[j - window : j].
    before = sums[window - 1 : -1].copy()
    before[1:] -= sums[: len(seq) - window - 1]
    fire = np.flatnonzero(seq[window:] * den_w > before * num)
    if not len(fire):
        return []
    return [(int(k) + window, int(before[k])) for k in fire]


def _register() -> None:
    """The kinds of the alert layer (their modules import this one: registered last)."""
    from spikewatch.core import notional, surge

    DETECTORS.setdefault("notional", notional.build)
    DETECTORS.setdefault("surge", surge.build)


_register()
