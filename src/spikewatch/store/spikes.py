"""The latest stored *spike*: what ``/api/get_signal`` serves after a restart.

A store keeps every detector's signals; with the alert profile on, the newest of them may
be an order event or a surge (``Signal.spike`` False), which ``/api/get_signal`` never
serves. The newest spike is looked for among the newest signals, a page at a time.
"""

from __future__ import annotations

from spikewatch.core.model import Signal
from spikewatch.store.base import SignalStore

#: Signals looked through, at most, for the newest spike (order events and surges are rare
#: next to spikes: the shipped profile's are a few per hour on a busy pair).
SCAN = 2000
PAGE = 200


def latest_spike(
    store: SignalStore,
    *,
    exchange: str | None = None,
    symbol: str | None = None,
    until_us: int | None = None,
) -> Signal | None:
    """The newest stored spike of ``exchange`` and ``symbol`` (where given) before
    ``until_us``, or None if none is among the newest :data:`SCAN` signals."""
    after = None
    for _ in range(SCAN // PAGE):
        page = store.page(
            exchange=exchange, symbol=symbol, until_us=until_us, limit=PAGE, after=after
        )
        for signal in page.signals:
            if signal.spike:
                return signal
        if page.next_cursor is None:
            return None
        after = page.next_cursor
    return None
