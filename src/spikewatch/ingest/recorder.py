"""The raw-frame recorder: tees received frames to rotating gzip JSON-lines files.

Each line is ``{"recv_ns": <local receive time, ns>, "frame": "<frame text>"}``, which
``spikewatch replay`` and ``spikewatch simulate`` read back.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec


class _Line(msgspec.Struct):
    recv_ns: int
    frame: str


_encode = msgspec.json.Encoder().encode


class FrameRecorder:
    """Writes frames to ``<dir>/<prefix>-<UTC time>.jsonl.gz``, starting a new file once
    one holds ``max_bytes`` of frames or has been open ``max_seconds``."""

    def __init__(
        self,
        directory: str | Path,
        prefix: str = "frames",
        *,
        max_bytes: int = 256 << 20,
        max_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self._clock = clock
        self._file: gzip.GzipFile | None = None
        self._opened = 0.0
        self._bytes = 0
        self.frames = 0
        self.files: list[Path] = []

    def _open(self) -> gzip.GzipFile:
        self.close()
        now = self._clock()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        path = self.directory / f"{self.prefix}-{stamp}-{len(self.files):04d}.jsonl.gz"
        handle = gzip.GzipFile(path, "wb", compresslevel=6)
        self._file = handle
        self._opened = now
        self._bytes = 0
        self.files.append(path)
        return handle

    def write(self, frame: bytes, recv_ns: int) -> None:
        """Append one frame with its receive time."""
        handle = self._file
        if (
            handle is None
            or self._bytes >= self.max_bytes
            or self._clock() - self._opened >= self.max_seconds
        ):
            handle = self._open()
        text = frame.decode("utf-8", errors="replace")
        line = _encode(_Line(recv_ns, text)) + b"\n"
        handle.write(line)
        self._bytes += len(line)
        self.frames += 1

    def close(self) -> None:
        """Finish the current file (a complete, valid gzip stream)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class RecorderSink:
    """A :class:`FrameRecorder` as a sink: the gzip writes run on a sink worker's thread,
    never on the ingest thread."""

    def __init__(self, recorder: FrameRecorder) -> None:
        self.recorder = recorder

    def write(self, items: Sequence[tuple[bytes, int]]) -> None:
        """Append ``(frame, recv_ns)`` pairs, in order."""
        write = self.recorder.write
        for frame, recv_ns in items:
            write(frame, recv_ns)

    def close(self) -> None:
        """Finish the current file."""
        self.recorder.close()
