"""Where trades and signals go on the bus: partitions and subject names. Pure.

Trades of ``(exchange, symbol)`` are published on ``<prefix>.<partition>.<exchange>.<symbol>``
(``trades.3.binance.BTCUSDT``). The partition is the first token after the prefix so that
one durable consumer with one filter subject, ``trades.3.*.*``, receives exactly the trades
of partition 3: a JetStream filter is a subject wildcard, and a wildcard cannot compute a
hash, so the partition has to be written into the subject by the publisher. (A consumer
with several filter subjects, one per symbol, would need nats-server 2.10 and a change of
consumer whenever a symbol is listed; the CI machine's server is 2.9.)

Signals of ``(exchange, symbol)`` go on ``signals.<exchange>.<symbol>``: a reader of
signals (``spikewatch serve``) wants them by symbol, never by partition.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Final

#: A subject token: no dots, wildcards or white space (NATS subject syntax), and short.
_TOKEN: Final = re.compile(r"[A-Za-z0-9_\-]{1,64}")
#: The most partitions a stream may have: enough for any cluster this runs on, and few
#: enough that a worker can hold one consumer per partition.
MAX_PARTITIONS: Final = 1024


def check_token(kind: str, text: str) -> str:
    """``text`` if it can stand as one subject token, else ValueError naming ``kind``."""
    if not _TOKEN.fullmatch(text):
        raise ValueError(f"{kind} {text!r} cannot be a subject token (letters, digits, - and _)")
    return text


def partition_of(exchange: str, symbol: str, partitions: int) -> int:
    """The partition of ``(exchange, symbol)`` among ``partitions``: the first 8 bytes of
    BLAKE2b of ``exchange.symbol`` (big-endian) modulo ``partitions``; the same in every
    process and release (Python's ``hash()`` of a string is salted per process).

    A cryptographic mix, not CRC-32: CRC is linear, so names that differ in one character
    (``AAA0USDT`` .. ``AAA7USDT``, as listings often come) differ by the same few bits and
    all fell into one partition of 8. The layout is part of the trade stream's identity:
    changing this function moves symbols between partitions, which needs a new stream
    (docs/DISTRIBUTED.md, "Subjects and partitions")."""
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise ValueError(f"partitions must be 1..{MAX_PARTITIONS}, got {partitions}")
    digest = hashlib.blake2b(f"{exchange}.{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def parse_partitions(spec: str, partitions: int) -> list[int]:
    """Partitions named like ``"0-7"``, ``"3"`` or ``"0-3,6"``, each checked to be below
    ``partitions``; sorted, without repeats."""
    chosen: set[int] = set()
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValueError(f"bad partition range {part!r} in {spec!r}") from None
        if not 0 <= low <= high < partitions:
            raise ValueError(f"partitions {part!r} are not within 0..{partitions - 1}")
        chosen.update(range(low, high + 1))
    return sorted(chosen)


@dataclass(frozen=True, slots=True)
class TradeSubjects:
    """The subjects of one trade stream: ``partitions`` is fixed for the stream's life
    (it is recorded in the stream's config; see :func:`spikewatch.bus.stream.ensure_trade_stream`).

    ``prefix`` lets several streams live on one server (tests, staging beside live).
    """

    partitions: int
    prefix: str = "trades"
    _subjects: dict[tuple[str, str], str] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be 1..{MAX_PARTITIONS}, got {self.partitions}")
        check_token("subject prefix", self.prefix)

    def partition(self, exchange: str, symbol: str) -> int:
        """The partition of ``(exchange, symbol)``."""
        return partition_of(exchange, symbol, self.partitions)

    def subject(self, exchange: str, symbol: str) -> str:
        """The subject the trades of ``(exchange, symbol)`` are published on (cached: the
        publisher asks for every batch)."""
        key = (exchange, symbol)
        subject = self._subjects.get(key)
        if subject is None:
            check_token("exchange", exchange)
            check_token("symbol", symbol)
            part = partition_of(exchange, symbol, self.partitions)
            subject = self._subjects[key] = f"{self.prefix}.{part}.{exchange}.{symbol}"
        return subject

    def filter(self, partition: int) -> str:
        """The filter subject of a consumer of ``partition``: all its trades."""
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is not within 0..{self.partitions - 1}")
        return f"{self.prefix}.{partition}.*.*"

    @property
    def wildcard(self) -> str:
        """The stream's subject: every partition, exchange and symbol."""
        return f"{self.prefix}.*.*.*"


def signal_subject(exchange: str, symbol: str, prefix: str = "signals") -> str:
    """The subject the signals of ``(exchange, symbol)`` are published on."""
    check_token("subject prefix", prefix)
    return f"{prefix}.{check_token('exchange', exchange)}.{check_token('symbol', symbol)}"
