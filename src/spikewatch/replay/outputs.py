"""Where ``spikewatch replay`` writes signals: JSON lines, CSV or Parquet."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import msgspec

from spikewatch.core.alerts import Alert, AlertEvent
from spikewatch.core.model import Signal


def fields_of(kind: type[Signal]) -> tuple[str, ...]:
    """The columns of a signal type: ``signal_type``, the common fields, its details."""
    return ("signal_type", *kind.__struct_fields__)


def _row(signal: Signal, names: tuple[str, ...]) -> list[object]:
    return [getattr(signal, name, None) for name in names]


class SignalSink(Protocol):
    """Takes signals one at a time; ``close()`` finishes the output."""

    def write(self, signal: Signal) -> None:
        """Write one signal."""
        ...

    def close(self) -> None:
        """Flush and close."""
        ...


class JsonLinesSink:
    """One JSON object per line (the API's signal shape)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._encode = msgspec.json.Encoder().encode

    def write(self, signal: Signal) -> None:
        """Write one signal as a line."""
        self._stream.write(self._encode(signal) + b"\n")

    def write_alert(self, alert: Alert) -> None:
        """Write one alert as a line (``replay --alerts``)."""
        self._stream.write(self._encode(alert) + b"\n")

    def close(self) -> None:
        """Flush (and close, unless it is stdout)."""
        self._stream.flush()
        if self._stream is not sys.stdout.buffer:
            self._stream.close()


class CsvSink:
    """A CSV file with a header row of the signal's fields."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._fields: tuple[str, ...] | None = None

    def write(self, signal: Signal) -> None:
        """Write one signal as a row (the header is the first signal type's columns;
        a column another type lacks stays empty)."""
        if self._fields is None:
            self._fields = fields_of(type(signal))
            self._writer.writerow(self._fields)
        self._writer.writerow(_row(signal, self._fields))

    def close(self) -> None:
        """Close the file (with the common columns only when there was no signal)."""
        if self._fields is None:
            self._writer.writerow(fields_of(Signal))
        self._file.close()


class ParquetSink:
    """A Parquet file (needs ``pyarrow``: ``pip install 'spikewatch[parquet]'``)."""

    def __init__(self, path: Path) -> None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SystemExit(
                "writing Parquet needs pyarrow: pip install 'spikewatch[parquet]'"
            ) from None
        self._path = path
        self._rows: list[dict[str, Any]] = []

    def write(self, signal: Signal) -> None:
        """Collect one signal (signals are few; they are written at close)."""
        self._rows.append({"signal_type": signal.signal_type, **msgspec.structs.asdict(signal)})

    def close(self) -> None:
        """Write the file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        names: dict[str, None] = dict.fromkeys(fields_of(Signal))
        for row in self._rows:
            names.update(dict.fromkeys(row))
        columns = {name: [row.get(name) for row in self._rows] for name in names}
        pq.write_table(pa.table(columns), self._path)


class OutputSink:
    """A replay output behind the sink port: its writes run on a sink worker's thread."""

    def __init__(self, output: SignalSink) -> None:
        self.output = output
        #: the reader went away (``spikewatch replay ... | head``): nothing more is written
        self.broken = False

    def write(self, items: Sequence[Signal]) -> None:
        """Write signals in order."""
        if self.broken:
            return
        write = self.output.write
        try:
            for signal in items:
                write(signal)
        except BrokenPipeError:
            self.broken = True

    def close(self) -> None:
        """Finish the output."""
        try:
            self.output.close()
        except BrokenPipeError:
            self.broken = True


def open_sink(out: str | None) -> SignalSink:
    """A sink for ``--out``: ``-``/None is stdout JSON lines; else by file extension."""
    if out is None or out == "-":
        return JsonLinesSink(sys.stdout.buffer)
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return JsonLinesSink(path.open("wb"))
    if suffix == ".csv":
        return CsvSink(path)
    if suffix == ".parquet":
        return ParquetSink(path)
    raise ValueError(f"--out {out}: use a .jsonl, .csv or .parquet file name, or -")


def alert_writer(sink: SignalSink, target: OutputSink) -> Callable[[Sequence[AlertEvent]], None]:
    """Where ``replay --alerts`` writes each alert as it opens (JSON lines only)."""
    if not isinstance(sink, JsonLinesSink):
        raise ValueError("--alerts writes JSON lines: use --out - or a .jsonl file name")

    def write(events: Sequence[AlertEvent]) -> None:
        if target.broken:
            raise BrokenPipeError
        try:
            for event in events:
                if event.opened:
                    sink.write_alert(event.alert)
        except BrokenPipeError:
            target.broken = True
            raise

    return write
