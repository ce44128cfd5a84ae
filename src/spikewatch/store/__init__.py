"""Where signals are kept: the :class:`SignalStore` port and its SQLite and PostgreSQL
implementations."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from spikewatch.store.base import Cursor, SignalPage, SignalStore
from spikewatch.store.sqlite import SQLiteSignalStore, StoreOpenError
from spikewatch.store.writer import StoreWriter

if TYPE_CHECKING:
    from spikewatch.store.postgres import PostgresSignalStore

__all__ = [
    "Cursor",
    "PostgresSignalStore",
    "SQLiteSignalStore",
    "SignalPage",
    "SignalStore",
    "StoreOpenError",
    "StoreWriter",
    "is_postgres_url",
    "open_store",
]

#: URL schemes that name a PostgreSQL database (libpq accepts both).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` is a PostgreSQL URL rather than a SQLite path."""
    return isinstance(target, str) and target.lower().startswith(POSTGRES_SCHEMES)


def open_store(target: str | os.PathLike[str]) -> SignalStore:
    """The store ``target`` names: a ``postgresql://`` (or ``postgres://``) URL opens a
    :class:`PostgresSignalStore`, anything else is the path of a SQLite file (or
    ``:memory:``). Raises :class:`StoreOpenError` when it cannot be opened."""
    if isinstance(target, str) and is_postgres_url(target):
        from spikewatch.store.postgres import PostgresSignalStore

        return PostgresSignalStore(target)
    return SQLiteSignalStore(os.fspath(target))


def __getattr__(name: str) -> object:
    # psycopg is imported only by those who use PostgreSQL: a SQLite run, and every
    # import of the store package, does without loading libpq.
    if name == "PostgresSignalStore":
        from spikewatch.store.postgres import PostgresSignalStore

        return PostgresSignalStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
