"""Shared pytest fixtures: where the recorded test data lives, and the recording itself."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

FIXTURES_DIR = Path(__file__).parent / "fixtures"
BTC_FRAMES_FILE = (
    FIXTURES_DIR / "binance-spot-BTCUSDT-trade-msgs-2024-08-08T2354Z_2024-08-09T0005Z.jsonl.gz"
)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The folder of real recorded exchange data (see fixtures/SOURCES.md)."""
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def btc_frames() -> list[bytes]:
    """The 19,904 recorded BTCUSDT combined-stream trade frames, byte-exact, in order."""
    with gzip.open(BTC_FRAMES_FILE, "rb") as handle:
        return [line.rstrip(b"\r\n") for line in handle if line.strip()]
