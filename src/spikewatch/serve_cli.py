"""``spikewatch serve``: the API, live stream and dashboard of the distributed mode, from
PostgreSQL, with the live push woken by NATS (see :mod:`spikewatch.serve`)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from spikewatch import __version__
from spikewatch.config import Settings

log = logging.getLogger("spikewatch")

#: The settings ``serve``'s flags may set.
SERVE_KEYS = (
    "postgres",
    "nats_url",
    "bus_prefix",
    "exchange",
    "host",
    "port",
    "log_level",
    "web_threads",
    "alert_profile",
)


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on the subcommands ``sub`` (argparse's subparsers action)."""
    serve: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="serve the API, live stream and dashboard from PostgreSQL, pushed live from "
        "NATS (distributed mode; docs/DISTRIBUTED.md)",
    )
    serve.add_argument(
        "--postgres",
        help="PostgreSQL URL of the signal store, e.g. postgresql://user@host:5432/db "
        "(required: this flag, SPIKEWATCH_POSTGRES, or postgres in --config)",
    )
    serve.add_argument(
        "--nats-url", dest="nats_url", help="NATS server (default nats://127.0.0.1:4222)"
    )
    serve.add_argument(
        "--bus-prefix",
        dest="bus_prefix",
        help="the deployment's stream and subject names start with it (default spikewatch; "
        "as given to ingest and detect)",
    )
    serve.add_argument(
        "--exchange", help="the exchange served: binance (spot, default) or binance-usdm"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", help="port to listen on (default 5000)")
    serve.add_argument("--web-threads", dest="web_threads", help="web server threads")
    serve.add_argument(
        "--alert-profile",
        dest="alert_profile",
        help="auto (default), default or off: as given to detect, so the alert log and "
        "its rules are those detect runs (with [[alerts]] from --config)",
    )
    serve.add_argument("--config", help="TOML file with settings (see docs/CONFIGURATION.md)")
    serve.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR")
    return serve


def cmd_serve(ns: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; 2 (after one line on stderr) when PostgreSQL, NATS or
    the listening address cannot be used."""
    from spikewatch.cli import SignalSummary, _sigterm_as_interrupt
    from spikewatch.serve import ServeStartError, ServeView
    from spikewatch.store.sqlite import StoreOpenError
    from spikewatch.web.app import create_app
    from spikewatch.web.server import ServeError, create_server, server_url

    if not settings.postgres:
        print(
            "spikewatch: serve needs the PostgreSQL URL of the signal store: --postgres, "
            "SPIKEWATCH_POSTGRES, or postgres in --config",
            file=sys.stderr,
        )
        return 2
    import psycopg

    from spikewatch.store.postgres import PostgresSignalStore

    try:
        store = PostgresSignalStore(settings.postgres)
    except StoreOpenError as exc:
        print(f"spikewatch: {exc}", file=sys.stderr)
        return 2
    summary = SignalSummary()  # one line every 10 s on the terminal, not one per signal
    try:
        try:
            view = ServeView(settings, store)
        except psycopg.Error as exc:  # it reads the store's newest signals first
            reason = " ".join(str(exc).split())
            raise ServeStartError(f"cannot read the database {store.url}: {reason}") from None
        view.add_listener(summary.note)
        # before start: the market board follows the pushed signals from the first one
        app = create_app(view.settings, view)
        # live-stream clients each hold a (sleeping) request thread: leave some for the rest
        view.hub.max_clients = max(1, settings.web_threads - 16)
        view.start()
    except ServeStartError as exc:
        store.close()
        print(f"spikewatch: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        store.close()
        raise
    try:
        server = create_server(app, settings.host, settings.port, settings.web_threads)
    except ServeError as exc:
        view.stop()
        store.close()
        print(f"spikewatch: {exc}", file=sys.stderr)
        return 2
    url = server_url(server)
    # waitress waits for busy workers at an interrupt: live streams end first
    with _sigterm_as_interrupt(before=view.hub.close):
        summary.start()
        log.info(
            "spikewatch %s serve: %s signals from %s, live push woken by %s (%s)",
            __version__,
            settings.exchange,
            store.url,
            view.nats_url,
            view.subjects,
        )
        log.info("serving %s (API: %sapi/get_signal, %sapi/status)", url, url, url)
        try:
            server.run()  # returns (closed) after an interrupt
        except KeyboardInterrupt:
            pass
        finally:
            log.info("shutting down")
            view.hub.close()
            view.hub.wait_closed(0.5)
            server.close()
            view.stop(timeout=1.5)
            summary.stop()
            store.close()
    return 0
