"""``spikewatch replay FILE...``: files of trades through the kernel, the signals (or,
with ``--alerts``, the alerts) written out, and a summary on stderr."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING

from spikewatch.config import Settings

if TYPE_CHECKING:
    from spikewatch.core.alerts import AlertEvent
    from spikewatch.core.model import Signal
    from spikewatch.replay.readers import ReadStats

#: Seconds between replay progress lines when stderr is not a terminal.
PROGRESS_EVERY = 5.0


class _Progress:
    """Replay progress on ``stream``: on a terminal one line updated in place; otherwise
    (a log file, CI) a plain line at once and then every ``every`` seconds at most."""

    def __init__(self, stream: IO[str], every: float = PROGRESS_EVERY) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every
        self._next = 0.0  # monotonic seconds of the next plain line
        self._open = False  # a terminal line waits for its newline

    def __call__(self, trades: int, signals: int, time_us: int) -> None:
        from spikewatch.core.model import iso_utc

        text = f"  {trades:>12,} trades  {signals:>8,} signals  at {iso_utc(time_us)}"
        if self._tty:
            self._stream.write(f"\r{text}")
            self._open = True
        else:
            now = time.monotonic()
            if now < self._next:
                return
            self._next = now + self._every
            self._stream.write(f"{text}\n")
        self._stream.flush()

    def end(self) -> None:
        """End the terminal's progress line, if one is shown."""
        if self._open:
            self._stream.write("\n")
            self._open = False


def cmd_replay(ns: argparse.Namespace, settings: Settings) -> int:
    """Run files of trades through the kernel and write the signals."""
    from spikewatch.core.kernel import GapPolicy
    from spikewatch.replay.outputs import OutputSink, alert_writer, open_sink
    from spikewatch.replay.readers import ReadStats, read_trades
    from spikewatch.replay.runner import replay
    from spikewatch.sinks import Overflow, SinkWorker
    from spikewatch.wiring import build_exchange, build_kernel

    symbols = None
    if ns.symbols:
        symbols = frozenset(s.strip().upper() for s in ns.symbols.split(",") if s.strip())
    try:
        sink = open_sink(ns.out)
        if (
            ns.alerts
            and ns.out not in (None, "-")
            and not ns.out.lower().endswith((".jsonl", ".json", ".ndjson"))
        ):
            raise ValueError("--alerts writes JSON lines: use --out - or a .jsonl file name")
    except (ValueError, OSError) as exc:
        print(f"spikewatch: {exc}", file=sys.stderr)
        return 2
    # the output is written on a sink worker's thread (the same port as the live store)
    target = OutputSink(sink)
    output: SinkWorker[Signal] = SinkWorker(
        "replay-output", target, maxsize=65536, overflow=Overflow.BLOCK
    )

    def deliver(signals: Sequence[Signal]) -> None:
        if target.broken:  # nobody reads the output any more: stop, as a pipe's writer does
            raise BrokenPipeError
        output.put_many(signals)

    stats = ReadStats()
    opened = [0]  # alerts written (--alerts)
    progress = None if ns.quiet else _Progress(sys.stderr)
    try:
        exchange = build_exchange(settings)
        trades = read_trades(
            ns.files, fmt=ns.format, symbol=ns.symbol, stats=stats, exchange=exchange
        )
        if ns.alerts:
            settings = with_rules(settings)
        kernel = build_kernel(
            settings,
            venues=(exchange,),
            gap_policy=GapPolicy(ns.on_gap),
            bars=False,
            alerts=ns.alerts,
        )
        summary = replay(
            trades,
            kernel,
            None,
            on_signals=None if ns.alerts else deliver,
            on_alerts=counted(alert_writer(sink, target), opened) if ns.alerts else None,
            symbols=symbols,
            progress=progress,
        )
    except BrokenPipeError:
        pass  # the reader of stdout went away (| head): the summary below still goes out
    except (ValueError, OSError) as exc:
        if progress is not None:
            progress.end()
        print(f"spikewatch: {exc}", file=sys.stderr)
        return 2
    finally:
        output.flush()
        output.close(timeout=600)  # closes the output (Parquet is written then)
    if progress is not None:
        progress.end()
    if target.broken:
        return 0
    if output.stats().failures:
        print(f"spikewatch: writing signals to {ns.out or 'stdout'} failed", file=sys.stderr)
        return 1
    problem = _nothing_replayed(ns, stats, summary.trades, summary.other_symbols, symbols)
    if problem is not None:
        print(f"spikewatch: {problem}", file=sys.stderr)
        return 2
    if not ns.quiet:
        from spikewatch.core.model import iso_utc

        span = (
            f"{iso_utc(summary.first_time_us)} .. {iso_utc(summary.last_time_us)} "
            f"({summary.span_hours:.2f} h)"
            if summary.first_time_us is not None and summary.last_time_us is not None
            else "no trades"
        )
        bad = sum(stats.bad_rows.values())
        other = (
            f"{stats.skipped:,} other lines (depth, tickers...) skipped, " if stats.skipped else ""
        )
        print(
            f"replayed {summary.trades:,} trades from {stats.files} file(s): "
            f"{summary.signals:,} signals ({summary.signals_per_hour:.1f}/h)"
            f"{f', {opened[0]:,} alerts' if ns.alerts else ''}, {span}; "
            f"{summary.trades_per_second:,.0f} trades/s; "
            f"{other}{bad:,} bad rows, {summary.duplicates:,} duplicates, {summary.gaps:,} id gaps"
            f" ({summary.lost_trades:,} trades missing)",
            file=sys.stderr,
        )
    return 0


def counted(
    write: Callable[[Sequence[AlertEvent]], None], opened: list[int]
) -> Callable[[Sequence[AlertEvent]], None]:
    """``write``, counting the alerts opened into ``opened[0]``."""

    def count(events: Sequence[AlertEvent]) -> None:
        opened[0] += sum(1 for e in events if e.opened)
        write(events)

    return count


def with_rules(settings: Settings) -> Settings:
    """The settings for alerts as the live app raises them: ``auto`` is the shipped
    profile, as live; with ``off``, the profile still when there is no other rule."""
    import msgspec

    from spikewatch.config import resolve_profile

    settings = resolve_profile(settings, live=True)  # the alerts the live app raises
    if settings.alerts or settings.alert_profile == "default":
        return settings
    return msgspec.structs.replace(settings, alert_profile="default")


def _nothing_replayed(
    ns: argparse.Namespace,
    stats: ReadStats,
    trades: int,
    others: frozenset[str],
    symbols: frozenset[str] | None,
) -> str | None:
    """Why a replay found no trade at all, naming the fix; None when it found some."""
    if trades:
        return None
    files = ns.files[0] if len(ns.files) == 1 else f"the {len(ns.files)} files"
    if stats.trades and symbols is not None:
        return (
            f"no trades of {', '.join(sorted(symbols))} in {files} (only of "
            f"{', '.join(sorted(others))}): check --symbols"
        )
    hint = _format_hint(ns)
    if stats.bad:
        kinds = ", ".join(f"{kind} x{n:,}" for kind, n in sorted(stats.bad_rows.items()))
        return f"no trades read from {files}: all {stats.bad:,} rows were bad ({kinds}); {hint}"
    if stats.rows:
        return f"no trades read from {files}: none of its {stats.rows:,} lines is a trade; {hint}"
    return f"no trades read from {files}: empty"


def _format_hint(ns: argparse.Namespace) -> str:
    """What to check when files gave no trade: a ``--format`` that does not fit them (by
    their contents), else the format and the exchange."""
    from spikewatch.replay.readers import detect_format

    if ns.format is not None:
        for path in ns.files:
            try:
                kind = detect_format(path)
            except (ValueError, OSError):
                continue
            if kind != ns.format:
                return (
                    f"{path} looks like {kind}: drop --format {ns.format} (or use --format {kind})"
                )
    venue = ns.exchange or "binance"
    return f"are these {venue} trade files? check --format and --exchange"
