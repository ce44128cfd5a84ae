"""Detectors: plain objects that see one symbol's trades in order and return signals.

Every detector has ``key`` (stable, used in signal ids), ``update(trade) -> Signal | None``,
and ``snapshot()`` / ``restore()`` so its state can survive a restart.
"""

from __future__ import annotations

from array import array
from decimal import Decimal
from typing import Any, Protocol

from spikewatch.core.decimal import SCALE, units_to_float
from spikewatch.core.model import Signal, Trade, iso_utc


class Detector(Protocol):
    """What the pipeline needs of a detector."""

    key: str

    def update(self, trade: Trade) -> Signal | None:
        """Feed the next trade of this detector's symbol; return a signal if it fires."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The state needed to continue exactly where this detector is now (JSON-safe)."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot` taken with the same parameters."""
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

    name = "volume_spike"
    signal_type = "VolumeSpike"

    __slots__ = ("_buf", "_den_w", "_filled", "_num", "_pos", "_sum", "key", "threshold", "window")

    def __init__(self, window: int = 200, threshold: Decimal | int | str = 10) -> None:
        threshold = Decimal(threshold)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not threshold.is_finite() or threshold <= 0:
            raise ValueError(f"threshold must be a positive finite number, got {threshold}")
        self.window = window
        self.threshold = threshold
        self.key = f"{self.name}-w{window}-x{_threshold_key(threshold)}"
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
                signal = self._signal(trade, total)
            self._sum = total + qty - buf[pos]
        else:
            self._sum = total + qty
            self._filled += 1
        buf[pos] = qty
        pos += 1
        self._pos = 0 if pos == self.window else pos
        return signal

    def _signal(self, trade: Trade, total: int) -> Signal:
        window = self.window
        return Signal(
            id=f"{trade.exchange}:{trade.symbol}:{self.key}:{trade.trade_id}",
            signal_type=self.signal_type,
            exchange=trade.exchange,
            symbol=trade.symbol,
            detector=self.key,
            trade_id=trade.trade_id,
            timestamp=iso_utc(trade.time_us),
            time_us=trade.time_us,
            price=units_to_float(trade.price),
            volume=units_to_float(trade.qty),
            quote_volume=float(Decimal(trade.price) * Decimal(trade.qty) / (SCALE * SCALE)),
            side=trade.side.value,
            average_volume=total / (SCALE * window),
            ratio=trade.qty * window / total,
            window=window,
            threshold=float(self.threshold),
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
