"""The command line: ``spikewatch run`` (the default, also ``python app.py``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

from spikewatch import __version__
from spikewatch.config import ConfigError, Settings, load_settings

log = logging.getLogger("spikewatch")


def _add_detector_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbols", help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    parser.add_argument("--window", help="trades in the rolling window (default 200)")
    parser.add_argument("--threshold", help="spike when qty > threshold x mean (default 10)")


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with settings (see docs/CONFIGURATION.md)")
    parser.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="spikewatch", description="Real-time crypto volume-spike detector."
    )
    parser.add_argument("--version", action="version", version=f"spikewatch {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="stream live trades, detect spikes, serve the API")
    _add_detector_flags(run)
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", help="port to listen on (default 5000)")
    run.add_argument("--db", help="SQLite file, or :memory: (default ./spikewatch.db)")
    run.add_argument("--ws-url", dest="ws_url", help="stream base URL (default Binance)")
    run.add_argument("--rest-url", dest="rest_url", help="REST base URL (default Binance)")
    run.add_argument("--web-threads", dest="web_threads", help="web server threads")
    _add_common_flags(run)
    return parser


def _settings(ns: argparse.Namespace, keys: Sequence[str]) -> Settings:
    flags: dict[str, Any] = {key: getattr(ns, key, None) for key in keys}
    return load_settings(flags, config_path=getattr(ns, "config", None))


def setup_logging(level: str) -> None:
    """Log lines with time, level and source to stderr."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def cmd_run(settings: Settings) -> int:
    """Run the live engine and serve the web app until SIGINT/SIGTERM."""
    from waitress.server import create_server

    from spikewatch.engine import Engine
    from spikewatch.store.sqlite import SQLiteSignalStore
    from spikewatch.web.app import create_app

    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store)
    app = create_app(settings, engine)
    server = create_server(
        app,
        host=settings.host,
        port=settings.port,
        threads=settings.web_threads,
        ident="spikewatch",
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    engine.start()
    host, port = server.effective_host, server.effective_port
    log.info(
        "spikewatch %s: %s on %s, window %d, threshold %s; serving http://%s:%s/",
        __version__,
        ",".join(settings.symbols),
        engine.url,
        settings.window,
        settings.threshold,
        host,
        port,
    )
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("shutting down")
    finally:
        server.close()
        engine.stop(timeout=1.5)
        store.close()
    return 0


_RUN_KEYS = (
    "symbols",
    "window",
    "threshold",
    "host",
    "port",
    "db",
    "ws_url",
    "rest_url",
    "web_threads",
    "log_level",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spikewatch`` command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "run")
    parser = build_parser()
    ns = parser.parse_args(args)
    try:
        settings = _settings(ns, _RUN_KEYS)
    except ConfigError as exc:
        print(f"spikewatch: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    return cmd_run(settings)
