"""Shared pytest fixtures: where the recorded test data lives, and the recording itself."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests check what holds, never how fast: no per-example deadline (on CI's two
# busy cores a slow example is the machine, not the code), and a slow data generator is
# not a failure either. The examples and their number stay hypothesis's defaults.
settings.register_profile("spikewatch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("spikewatch")

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


_LOCAL_NAMES = ("localhost", "127.0.0.1", "::1", "")


def _is_local(host: object) -> bool:
    text = host.decode() if isinstance(host, bytes) else str(host)
    return text in _LOCAL_NAMES or text.startswith("127.")


@pytest.fixture(autouse=True)
def _no_public_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to 127.0.0.1 only: a name lookup or connection elsewhere fails at once
    (as it would in CI, which has no network) instead of reaching a public host."""
    import socket

    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host is not None and not _is_local(host):
            raise socket.gaierror(f"tests may not look up {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    def check(address: object) -> None:
        if isinstance(address, tuple) and not _is_local(address[0]):
            raise ConnectionRefusedError(f"tests may not connect to {address!r}")

    def connect(self: socket.socket, address: object) -> None:
        check(address)
        real_connect(self, address)  # type: ignore[arg-type]

    def connect_ex(self: socket.socket, address: object) -> int:
        check(address)
        return real_connect_ex(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
