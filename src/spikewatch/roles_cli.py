"""``spikewatch ingest`` and ``spikewatch detect``: the command lines of the distributed
mode's roles (docs/DISTRIBUTED.md). Registered by :mod:`spikewatch.cli`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spikewatch.config import Settings

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from spikewatch.roles.metrics import MetricsServer

log = logging.getLogger("spikewatch")

#: the settings each role's flags may set (None: not given)
INGEST_KEYS = (
    "nats_url",
    "postgres",
    "exchange",
    "symbols",
    "ws_url",
    "rest_url",
    "bus_prefix",
    "bus_partitions",
    "bus_replicas",
    "window",
    "metrics_port",
    "host",
    "log_level",
)
DETECT_KEYS = (
    "nats_url",
    "postgres",
    "exchange",
    "bus_prefix",
    "bus_partitions",
    "bus_replicas",
    "window",
    "threshold",
    "alert_profile",
    "detect_start",
    "metrics_port",
    "host",
    "log_level",
)

NEED_NATS = (
    "spikewatch: the distributed roles need the nats-py client: "
    "pip install 'spikewatch[distributed]'"
)


def _bus_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nats-url", dest="nats_url", help="NATS with JetStream (default nats://127.0.0.1:4222)"
    )
    parser.add_argument(
        "--postgres", help="PostgreSQL URL of the signal history (postgresql://user@host/db)"
    )
    parser.add_argument("--config", help="TOML file with settings (see docs/CONFIGURATION.md)")
    parser.add_argument(
        "--exchange", help="binance (spot, default) or binance-usdm (USD-M futures)"
    )
    parser.add_argument(
        "--bus-prefix",
        dest="bus_prefix",
        help="names of streams and buckets start with it (default spikewatch)",
    )
    parser.add_argument(
        "--bus-partitions",
        dest="bus_partitions",
        help="partitions of the trade stream (default 8; fixed for its life)",
    )
    parser.add_argument(
        "--bus-replicas",
        dest="bus_replicas",
        help="copies of each stream and bucket in a NATS cluster (default 1; 3 on 3 nodes)",
    )
    parser.add_argument(
        "--metrics-port",
        dest="metrics_port",
        help="serve Prometheus /metrics and /healthz on this port (default 0: none)",
    )
    parser.add_argument(
        "--host", help="address /metrics listens on (default 127.0.0.1; 0.0.0.0: all)"
    )
    parser.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR")


def add_role_parsers(sub: Any) -> None:
    """Add ``ingest`` and ``detect`` to the subcommands ``sub``."""
    ing = sub.add_parser(
        "ingest", help="distributed mode: exchange trades into the NATS trade stream"
    )
    _bus_flags(ing)
    ing.add_argument("--symbols", help="comma-separated, e.g. BTCUSDT,ETHUSDT, or ALL")
    ing.add_argument("--ws-url", dest="ws_url", help="stream base URL (default Binance)")
    ing.add_argument("--rest-url", dest="rest_url", help="REST base URL (default Binance)")
    ing.add_argument(
        "--window", help="trades fetched to warm up after a gap too large to fetch (default 200)"
    )
    ing.add_argument(
        "--replay",
        nargs="+",
        metavar="FILE",
        help="publish the trades of these files (as spikewatch replay reads them) instead of "
        "the exchange's, then exit; trades the stream already holds are skipped",
    )
    ing.add_argument(
        "--format", choices=("trades", "aggtrades", "frames"), help="with --replay: file format"
    )
    ing.add_argument(
        "--symbol", help="with --replay: symbol of CSV files (default: from the file name)"
    )

    det = sub.add_parser(
        "detect", help="distributed mode: detect on partitions of the trade stream"
    )
    _bus_flags(det)
    det.add_argument(
        "--partitions", default="", help="partitions to serve: 0-7, 3 or 0-3,6 (default: all)"
    )
    det.add_argument("--window", help="trades in the rolling window (default 200)")
    det.add_argument("--threshold", help="spike when qty > threshold x mean (default 10)")
    det.add_argument(
        "--alert-profile",
        dest="alert_profile",
        choices=("auto", "default", "off"),
        help="as for spikewatch run (auto: on, as in the live app)",
    )
    det.add_argument(
        "--detect-start",
        dest="detect_start",
        help="a partition without a snapshot starts at: snapshot-or-earliest (default), "
        "snapshot-or-latest, or snapshot-or-<N>s|m|h (e.g. snapshot-or-15m)",
    )


def role_command(
    ns: argparse.Namespace,
) -> tuple[tuple[str, ...], Callable[[argparse.Namespace, Settings], int]]:
    """The settings keys and the function of the role ``ns.command``."""
    if ns.command == "ingest":
        return INGEST_KEYS, cmd_ingest
    return DETECT_KEYS, cmd_detect


def _fail(message: str) -> int:
    print(f"spikewatch: {message}", file=sys.stderr)
    return 2


def _run_until_signal(main: Callable[[asyncio.Event], Any]) -> None:
    """Run ``main(stop)`` on a new loop; SIGTERM and SIGINT set ``stop``."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(runner())


def _metrics_server(
    settings: Settings, collector: Collector, problems: Callable[[], list[str]]
) -> MetricsServer | None:
    """The role's /metrics and /healthz on ``metrics_port`` (None: 0, none); OSError
    when the port cannot be had."""
    if not settings.metrics_port:
        return None
    from spikewatch.roles.metrics import MetricsServer

    server = MetricsServer(settings.host, settings.metrics_port, collector, problems)
    server.start()
    log.info("metrics: http://%s:%d/metrics and /healthz", settings.host, server.port)
    return server


def _metrics_failed(settings: Settings, exc: OSError) -> int:
    return _fail(
        f"metrics_port {settings.metrics_port} on {settings.host} cannot be served "
        f"({exc.strerror or exc}); give another --metrics-port (0: none)"
    )


def cmd_ingest(ns: argparse.Namespace, settings: Settings) -> int:
    """Publish the exchange's trades to the trade stream until SIGTERM/SIGINT."""
    try:
        from spikewatch.bus.connect import BusUnavailable
        from spikewatch.bus.publisher import PublishError
        from spikewatch.bus.stream import PartitionMismatch
        from spikewatch.roles.ingest import IngestRole
        from spikewatch.roles.metrics import IngestCollector
    except ImportError as exc:
        if getattr(exc, "name", "") and str(exc.name).startswith("nats"):
            return _fail(NEED_NATS)
        raise
    if ns.replay:
        return _ingest_files(ns, settings)
    from spikewatch.cli import unlisted_symbols

    unknown = unlisted_symbols(settings)
    if unknown is not None:
        return _fail(f"configuration error: {unknown}")
    sys.setswitchinterval(0.0005)  # (as spikewatch run: the engine thread is busy Python)
    role = IngestRole(settings)
    try:
        server = _metrics_server(settings, IngestCollector(role), role.problems)
    except OSError as exc:
        return _metrics_failed(settings, exc)
    try:
        _run_until_signal(role.run)
    except (BusUnavailable, PartitionMismatch) as exc:
        return _fail(str(exc))
    except PublishError as exc:
        log.error("%s; restart the ingest: it goes on from what the stream holds", exc)
        return 1
    finally:
        if server is not None:
            server.stop()
    return 0


def _ingest_files(ns: argparse.Namespace, settings: Settings) -> int:
    """``ingest --replay FILE...``: the files' trades into the stream, then exit."""
    from spikewatch.bus.connect import BusUnavailable
    from spikewatch.bus.publisher import PublishError
    from spikewatch.bus.stream import PartitionMismatch
    from spikewatch.roles.ingest_replay import ReplayCounters, ReplayIngest

    symbols = None
    if ns.symbols and ns.symbols.strip().upper() != "ALL":
        symbols = frozenset(s.strip().upper() for s in ns.symbols.split(",") if s.strip())
    try:
        role = ReplayIngest(settings, ns.replay, fmt=ns.format, symbol=ns.symbol, symbols=symbols)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    done: list[ReplayCounters] = []

    async def main(stop: asyncio.Event) -> None:
        done.append(await role.run(stop))

    try:
        _run_until_signal(main)
    except (BusUnavailable, PartitionMismatch, ValueError, OSError) as exc:
        return _fail(str(exc))
    except PublishError as exc:
        log.error("%s; run it again: trades the stream holds are skipped", exc)
        return 1
    c = done[0]
    rate = c.published / c.seconds if c.seconds > 0 else 0.0
    print(
        f"published {c.published:,} trades of {len(c.symbols)} symbol(s) from {c.files} "
        f"file(s) into {role.names.trade_stream} in {c.seconds:.2f} s ({rate:,.0f} trades/s; "
        f"{c.messages:,} messages, {c.duplicates:,} duplicates); {c.skipped:,} skipped "
        f"(already in the stream), {c.other:,} of other symbols, {c.bad_rows:,} bad rows",
        file=sys.stderr,
    )
    if not c.read and not c.skipped:
        return _fail("no trades read from the files: check --format, --symbol and --symbols")
    return 0


def cmd_detect(ns: argparse.Namespace, settings: Settings) -> int:
    """Serve partitions of the trade stream until SIGTERM/SIGINT."""
    try:
        from spikewatch.bus.connect import BusUnavailable
        from spikewatch.bus.stream import PartitionMismatch
        from spikewatch.bus.subjects import parse_partitions
        from spikewatch.roles.detect import DetectWorker
        from spikewatch.roles.metrics import DetectCollector
    except ImportError as exc:
        if getattr(exc, "name", "") and str(exc.name).startswith("nats"):
            return _fail(NEED_NATS)
        raise
    from spikewatch.config import resolve_profile
    from spikewatch.store.sqlite import StoreOpenError

    if not settings.postgres:
        return _fail(
            "configuration error: detect writes signals to PostgreSQL: give --postgres "
            "postgresql://user@host:5432/db (or SPIKEWATCH_POSTGRES)"
        )
    n = settings.bus_partitions
    try:
        partitions = parse_partitions(ns.partitions, n) if ns.partitions else list(range(n))
    except ValueError as exc:
        return _fail(f"configuration error: --partitions: {exc}")
    worker = DetectWorker(resolve_profile(settings, live=True), partitions)
    try:
        server = _metrics_server(settings, DetectCollector(worker), worker.problems)
    except OSError as exc:
        return _metrics_failed(settings, exc)

    async def main(stop: asyncio.Event) -> None:
        try:
            await worker.open()
            await worker.run(stop)
        finally:
            await worker.close()

    try:
        _run_until_signal(main)
    except (BusUnavailable, PartitionMismatch) as exc:
        return _fail(str(exc))
    except StoreOpenError as exc:
        return _fail(
            f"{exc} (is PostgreSQL running at that URL? set --postgres / SPIKEWATCH_POSTGRES)"
        )
    finally:
        if server is not None:
            server.stop()
    return 0


def load_role_settings(ns: argparse.Namespace) -> Settings:
    """The settings of a role's command line (ConfigError on a bad value)."""
    from spikewatch.config import load_settings

    keys, _ = role_command(ns)
    return load_settings({k: getattr(ns, k, None) for k in keys}, config_path=ns.config)
