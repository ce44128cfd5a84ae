"""Small SQL helpers shared by the SQLite store and the alert outbox."""

from __future__ import annotations

from collections.abc import Iterable


def filters(
    clauses: Iterable[tuple[str, str | int | None]],
) -> tuple[list[str], list[str | int]]:
    """The WHERE clauses (``"symbol = ?"``...) whose value is given, and their arguments;
    clauses whose value is None are left out."""
    where: list[str] = []
    args: list[str | int] = []
    for clause, value in clauses:
        if value is not None:
            where.append(clause)
            args.append(value)
    return where, args
