"""Helpers shared by the benchmarks: timing and where the data lives."""

from __future__ import annotations

import gzip
import platform
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FIXTURES = ROOT / "tests" / "fixtures"
BTC_FRAMES = FIXTURES / "binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz"


def data_file(name: str) -> Path:
    """A file of the shared data folder (beside the repo), or of tests/fixtures."""
    for folder in (SHARED, FIXTURES):
        if (folder / name).exists():
            return folder / name
    raise SystemExit(f"benchmark data {name} not found in {SHARED} or {FIXTURES}")


def read_frames(path: Path = BTC_FRAMES) -> list[bytes]:
    """Recorded frames, one per line, as received."""
    with gzip.open(path, "rb") as handle:
        return [line.rstrip(b"\n") for line in handle if line.strip()]


def best_rate(run: Callable[[], int], repeat: int = 7) -> float:
    """Items per second of the fastest of ``repeat`` runs (``run`` returns its item count)."""
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        items = run()
        elapsed = time.perf_counter() - started
        best = max(best, items / elapsed)
    return best


def machine() -> str:
    """One line naming the machine and Python."""
    return f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
