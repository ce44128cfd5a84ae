"""Where signals are kept: the :class:`SignalStore` port and its SQLite implementation."""

from spikewatch.store.base import Cursor, SignalPage, SignalStore
from spikewatch.store.sqlite import SQLiteSignalStore
from spikewatch.store.writer import StoreWriter

__all__ = ["Cursor", "SQLiteSignalStore", "SignalPage", "SignalStore", "StoreWriter"]
