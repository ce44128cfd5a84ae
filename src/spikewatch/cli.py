"""The command line: ``spikewatch run | replay | record | simulate | demo``.

``python app.py`` with no arguments is ``spikewatch run``; ``python app.py --demo`` is
``spikewatch demo``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from spikewatch import __version__
from spikewatch.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from spikewatch.core.model import Signal

log = logging.getLogger("spikewatch")

DEMO_RECORDING = "demo-btcusdt-2024-08-08.jsonl.gz"
#: Seconds between the signal summary lines of `run` and `demo` (each signal is at DEBUG).
SUMMARY_EVERY = 10.0


# -- arguments ---------------------------------------------------------------------------


def _detector_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--window", help="trades in the rolling window (default 200)")
    parser.add_argument("--threshold", help="spike when qty > threshold x mean (default 10)")
    parser.add_argument("--config", help="TOML file with settings (see docs/CONFIGURATION.md)")
    parser.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument(
        "--alert-profile",
        dest="alert_profile",
        choices=("auto", "default", "off"),
        help="default: the shipped alert rules (whale trades and orders, volume surges; "
        "docs/ALERTS.md) on top of any [[alerts]] in --config; off: only those; auto "
        "(the default): on in the live app, off in replay unless --alerts",
    )


def _server_flags(
    parser: argparse.ArgumentParser,
    db_help: str = "SQLite file, or :memory: (default ./spikewatch.db)",
) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", help="port to listen on (default 5000)")
    parser.add_argument("--db", help=db_help)
    parser.add_argument("--web-threads", dest="web_threads", help="web server threads")


def _fault_flags(parser: argparse.ArgumentParser) -> None:
    faults = parser.add_argument_group("fault injection (for tests)")
    faults.add_argument("--drop-every", type=int, default=0, metavar="N")
    faults.add_argument("--malformed-every", type=int, default=0, metavar="N")
    faults.add_argument("--shutdown-after", type=int, default=0, metavar="N")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="spikewatch", description="Real-time crypto volume-spike detector."
    )
    parser.add_argument("--version", action="version", version=f"spikewatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="stream live trades, detect spikes, serve the API (default)")
    run.add_argument("--exchange", help="binance (spot, default) or binance-usdm (USD-M futures)")
    run.add_argument("--symbols", help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    _detector_flags(run)
    _server_flags(run)
    run.add_argument("--ws-url", dest="ws_url", help="stream base URL (default Binance)")
    run.add_argument("--rest-url", dest="rest_url", help="REST base URL (default Binance)")
    run.add_argument("--record-dir", dest="record_dir", help="also record raw frames here")
    run.add_argument(
        "--demo",
        action="store_true",
        help="run the demo instead (no Binance; see spikewatch demo --help)",
    )
    run.add_argument(
        "--speed", default="1", help="with --demo: N times the recorded pace (a number > 0)"
    )

    rep = sub.add_parser("replay", help="detect spikes in recorded or historical trades")
    rep.add_argument("files", nargs="+", metavar="FILE", help="trade CSVs or frame recordings")
    rep.add_argument("--format", choices=("trades", "aggtrades", "frames"), help="file format")
    rep.add_argument("--symbol", help="symbol of CSV files (default: from the file name)")
    rep.add_argument("--symbols", help="only these symbols (comma-separated)")
    rep.add_argument("--out", help="- (JSON lines on stdout, default), x.jsonl, x.csv, x.parquet")
    rep.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")
    rep.add_argument(
        "--exchange",
        help="venue of the files: binance (spot, default) or binance-usdm (USD-M futures)",
    )
    rep.add_argument(
        "--on-gap",
        dest="on_gap",
        choices=("reset", "continue"),
        default="reset",
        help="at a jump in trade ids: warm the windows up again, as live does when a gap "
        "cannot be fetched (reset, default), or keep them (continue)",
    )
    rep.add_argument(
        "--alerts",
        action="store_true",
        help="write the alerts (JSON lines: timestamp, exchange, symbol, rule, side, price, "
        "usd_value...) instead of the raw signals; the shipped profile unless --config "
        "has [[alerts]]",
    )
    _detector_flags(rep)

    rp = sub.add_parser("report", help="one HTML page (and JSON) of the alerts on files")
    rp.add_argument("files", nargs="+", metavar="FILE", help="trade CSVs or frame recordings")
    rp.add_argument("--format", choices=("trades", "aggtrades", "frames"), help="file format")
    rp.add_argument("--symbol", help="symbol of CSV files (default: from the file name)")
    rp.add_argument("--exchange", help="venue of the files: binance (default) or binance-usdm")
    rp.add_argument("--out", default="report.html", help="the page (default report.html)")
    rp.add_argument("--json", dest="json_out", help="also write the report's data here")
    rp.add_argument(
        "--sweep",
        help="NAME=V1,V2,... a detector's main knob to try: a notional table's lowest tier, "
        "a surge's factor, a volume_spike's threshold (e.g. whale=100000,150000,250000)",
    )
    rp.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _detector_flags(rp)

    rec = sub.add_parser("record", help="record raw frames from the live stream to gzip files")
    rec.add_argument("--exchange", help="binance (spot, default) or binance-usdm (futures)")
    rec.add_argument("--symbols", help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    rec.add_argument("--ws-url", dest="ws_url", help="stream base URL (default Binance)")
    rec.add_argument("--out-dir", default="recordings", help="folder (default ./recordings)")
    rec.add_argument("--max-mb", type=float, default=256, help="start a new file after this")
    rec.add_argument("--max-minutes", type=float, default=60, help="start a new file after this")
    rec.add_argument("--config", help="TOML file with settings")
    rec.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING or ERROR")

    from spikewatch.exchanges import EXCHANGES  # the venues the simulator can speak

    sim = sub.add_parser("simulate", help="serve recorded trades as a local Binance stream")
    sim.add_argument("files", nargs="+", metavar="FILE", help="trade CSVs or frame recordings")
    sim.add_argument(
        "--exchange",
        choices=sorted(EXCHANGES),
        default="binance",
        help="venue to speak: binance (spot, default) or binance-usdm (USD-M futures routes)",
    )
    sim.add_argument("--format", choices=("trades", "aggtrades", "frames"), help="file format")
    sim.add_argument("--symbol", help="symbol of CSV files (default: from the file name)")
    sim.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=9443, help="port (default 9443)")
    sim.add_argument("--speed", default="1", help="N times the recorded pace, or 'max'")
    sim.add_argument("--loop", action="store_true", help="play the recording again and again")
    sim.add_argument(
        "--market",
        type=int,
        metavar="N",
        help="serve a whole market: N symbols re-labelled from the recordings' trades",
    )
    sim.add_argument(
        "--quotes", default="USDT,BTC,FDUSD", help="quote assets of --market's symbols"
    )
    sim.add_argument("--seed", type=int, default=0, help="--market's seed (default 0)")
    sim.add_argument("--log-level", dest="log_level", default="INFO")
    _fault_flags(sim)

    from spikewatch.serve_cli import add_parser as add_serve

    add_serve(sub)  # spikewatch serve (distributed mode)

    demo = sub.add_parser("demo", help="the full app on a bundled real recording (no Binance)")
    demo.add_argument(
        "--speed", default="1", help="N times the recorded pace: a number > 0 (default 1)"
    )
    _detector_flags(demo)
    _server_flags(
        demo,
        db_help="SQLite file to keep the demo's signals in (default: a temporary file, "
        "deleted when the demo stops; never ./spikewatch.db)",
    )
    from spikewatch.roles_cli import add_role_parsers  # distributed mode: ingest, detect

    add_role_parsers(sub)
    return parser


def _flags(ns: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {name: getattr(ns, name, None) for name in names}


def _speed(text: str) -> float | None:
    if text.lower() in ("max", "fast", "0"):
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ConfigError(f"bad value for speed = {text!r}: a number > 0, or 'max'") from None
    if not speed > 0:
        raise ConfigError(f"bad value for speed = {text!r}: a number > 0, or 'max'")
    return speed


def _demo_speed(text: str) -> float:
    """The demo's pace: a number > 0. Not 'max': the demo loops its recording, and at no
    pace at all it would only spin (``spikewatch simulate --speed max`` is for that)."""
    try:
        speed = float(text)
    except ValueError:
        speed = float("nan")
    if not 0 < speed < float("inf"):
        raise ConfigError(
            f"bad value for speed = {text!r}: the demo plays at a pace, a number > 0 "
            "(e.g. 10); for no pause at all use spikewatch simulate --speed max"
        )
    return speed


#: Libraries that log every connection and disconnection at INFO: below WARNING unless
#: the level is DEBUG (picows: the client; websockets: the simulator; waitress: clients
#: that went away while a live stream was being served).
CHATTY_LOGGERS = ("websockets", "picows", "waitress")


def setup_logging(level: str) -> None:
    """Log lines with time, level and source to stderr."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    debug = logging.getLogger().level <= logging.DEBUG
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


class SignalSummary:
    """Signals told on the terminal as one INFO line every ``every`` seconds ("12 signals
    in the last 10 s, latest BTCUSDT 0.27 @ 61,607.98 (sell)") instead of one line each
    (those are at DEBUG): a busy market raises several a second.

    :meth:`note` is an engine listener (on the ingest thread: it only counts);
    :meth:`start` runs the thread that writes the lines, :meth:`stop` ends it.
    """

    def __init__(self, every: float = SUMMARY_EVERY) -> None:
        self.every = every
        self._lock = threading.Lock()
        self._count = 0
        self._latest: Signal | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def note(self, signal: Signal) -> None:
        """Count one signal."""
        with self._lock:
            self._count += 1
            self._latest = signal

    def take(self) -> str | None:
        """The line for the signals noted since the last call; None if there was none."""
        with self._lock:
            count, latest = self._count, self._latest
            self._count = 0
        if not count or latest is None:
            return None
        return (
            f"{count:,} signal{'' if count == 1 else 's'} in the last {self.every:g} s, "
            f"latest {latest.symbol} {latest.volume:,} @ {latest.price:,} ({latest.side})"
        )

    def start(self) -> None:
        """Write a line every ``every`` seconds while there were signals."""
        self._thread = threading.Thread(target=self._run, name="spikewatch-summary", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (the signals since its last line are told now)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        line = self.take()
        if line is not None:
            log.info(line)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            line = self.take()
            if line is not None:
                log.info(line)


@contextlib.contextmanager
def _sigterm_as_interrupt(before: Callable[[], None] | None = None) -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt, after ``before()`` (which must be quick)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if before is not None:
            before()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# -- run -------------------------------------------------------------------------------


def unlisted_symbols(settings: Settings) -> str | None:
    """The named symbols the exchange does not list, as one line (Binance answers a
    subscription to a symbol it does not have with silence, so a typo would wait for
    trades for ever); None when all are listed or the listing cannot be read now (then
    the engine reads it again later)."""
    import asyncio

    from spikewatch.ingest.backoff import Backoff
    from spikewatch.ingest.listing import Listing, UnknownSymbols
    from spikewatch.ingest.rest import RestClient
    from spikewatch.wiring import build_exchange

    symbol_set = settings.symbol_set()
    exchange = build_exchange(settings)
    if symbol_set.is_all or exchange.listing() is None:
        return None
    rest = RestClient(
        settings.rest_url,
        timeout=5.0,
        attempts=2,
        max_wait=2.0,
        backoff=lambda: Backoff(first=0.1, cap=0.5),
    )
    listing = Listing(exchange, rest, symbol_set, quiet=True)
    pairs = asyncio.run(listing.read())
    if pairs is None:
        return None
    try:
        listing.resolve(pairs)
    except UnknownSymbols as exc:
        return str(exc)
    return None


def cmd_run(settings: Settings, banner: str = "") -> int:
    """Run the live engine and serve the web app until SIGINT/SIGTERM."""
    from spikewatch.engine import Engine
    from spikewatch.gcfreeze import GcFreezer
    from spikewatch.store.sqlite import SQLiteSignalStore
    from spikewatch.web.app import create_app
    from spikewatch.web.fastpath import quick_requests
    from spikewatch.web.server import ServeError, create_server, server_url

    unknown = unlisted_symbols(settings)
    if unknown is not None:
        print(f"spikewatch: configuration error: {unknown}", file=sys.stderr)
        return 2
    # The ingest thread is busy Python; by default another thread waits up to 5 ms for the
    # GIL at each hand-over, which web requests and live pushes pay several times over.
    sys.setswitchinterval(0.0005)
    # The collector's full walks of 2,000 symbols' state held the GIL 80-120 ms each
    # (every few seconds): long-lived objects are frozen out of them (gcfreeze.py).
    freezer = GcFreezer()
    store = SQLiteSignalStore(settings.db)
    engine = Engine(settings, store)
    summary = SignalSummary()  # one line every 10 s on the terminal, not one per signal
    engine.add_listener(summary.note)
    app = create_app(settings, engine)
    # Live-stream clients each hold a (sleeping) request thread: leave some for the rest.
    engine.hub.max_clients = max(1, settings.web_threads - 16)
    try:
        server = create_server(
            app, settings.host, settings.port, settings.web_threads, quick=quick_requests(app)
        )
    except ServeError as exc:
        store.close()
        print(f"spikewatch: {exc}", file=sys.stderr)
        return 2
    url = server_url(server)
    # waitress handles the interrupt itself by waiting (5 s) for busy workers: live
    # streams must end before that, so the hub is closed in the signal handler
    with _sigterm_as_interrupt(before=engine.hub.close):
        engine.start()
        summary.start()
        freezer.start()
        log.info(
            "spikewatch %s: %s from %s, window %d, threshold %s",
            __version__,
            settings.symbol_set().describe(),
            engine.url,
            settings.window,
            settings.threshold,
        )
        log.info("serving %s (API: %sapi/get_signal, %sapi/status)", url, url, url)
        if banner:
            print(banner.format(url=url), file=sys.stderr, flush=True)
        try:
            server.run()  # returns (closed) after an interrupt
        except KeyboardInterrupt:
            pass
        finally:
            log.info("shutting down")
            engine.hub.close()  # end live streams first, so no worker waits on one
            engine.hub.wait_closed(0.5)
            server.close()
            engine.stop(timeout=1.5)
            summary.stop()
            freezer.stop()
            store.close()
    return 0


# -- replay ----------------------------------------------------------------------------


# -- record ----------------------------------------------------------------------------


def cmd_record(ns: argparse.Namespace, settings: Settings) -> int:
    """Record raw frames from the live stream until SIGINT/SIGTERM."""
    import asyncio  # here: `spikewatch replay` starts faster without it

    from spikewatch.exchanges import Control
    from spikewatch.ingest.backoff import Backoff
    from spikewatch.ingest.client import StreamClient
    from spikewatch.ingest.recorder import FrameRecorder
    from spikewatch.wiring import build_exchange

    if settings.symbol_set().is_all:
        print(
            "spikewatch: record takes named symbols (e.g. --symbols BTCUSDT,ETHUSDT), "
            f"not {settings.symbol_set().describe()}",
            file=sys.stderr,
        )
        return 2
    exchange = build_exchange(settings)
    url = exchange.stream_url(settings.ws_url, settings.symbols)
    recorder = FrameRecorder(
        ns.out_dir,
        prefix=f"{exchange.name}-{'-'.join(settings.symbols).lower()}",
        max_bytes=int(ns.max_mb * (1 << 20)),
        max_seconds=ns.max_minutes * 60,
    )

    def handle(frames: list[bytes], recv_ns: int) -> bool:
        for frame in frames:
            recorder.write(frame, recv_ns)
        try:
            controls = exchange.parse_batch(frames).controls
        except Exception:  # a parser bug must not stop the recording
            return False
        return any(control is Control.SHUTDOWN for _, control in controls)

    client = StreamClient(
        url,
        handle,
        rotate_after=settings.rotate_after,
        backoff=Backoff(cap=settings.reconnect_max_delay),
    )
    log.info("recording %s into %s/", url, ns.out_dir)
    started = time.monotonic()

    async def record() -> None:
        # stop between frames, never inside a gzip write or the WebSocket parser
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, client.stop)
        await client.run()

    try:
        asyncio.run(record())
    finally:
        recorder.close()
    log.info(
        "recorded %d frames in %.0f s into %d file(s)",
        recorder.frames,
        time.monotonic() - started,
        len(recorder.files),
    )
    return 0


# -- simulate and demo -------------------------------------------------------------------


def load_tape(
    files: Sequence[str],
    fmt: str | None,
    symbol: str | None,
    encode: Callable[[Any], bytes] | None = None,
) -> list[Any]:
    """A simulator tape from recordings (frames kept byte-exact) or trade files (their
    events made by ``encode``, a venue codec's ``trade_frame``; spot's by default)."""
    from spikewatch.replay.readers import detect_format, read_trades
    from spikewatch.replay.tape import (
        merge_by_time,
        read_frame_lines,
        tape_from_frames,
        tape_from_trades,
    )

    tapes = []
    for path in files:
        kind = fmt or detect_format(path)
        if kind == "frames":
            tapes.append(tape_from_frames(read_frame_lines(path)))
        else:
            trades = read_trades([path], fmt=kind, symbol=symbol)
            tapes.append(tape_from_trades(trades, encode) if encode else tape_from_trades(trades))
    return merge_by_time(tapes) if len(tapes) > 1 else tapes[0]


def cmd_simulate(ns: argparse.Namespace) -> int:
    """Serve recorded trades over a Binance venue's protocol until SIGINT/SIGTERM."""
    from spikewatch.exchanges import EXCHANGES
    from spikewatch.replay.simulator import Faults, Simulator, SimulatorThread

    exchange = EXCHANGES[ns.exchange]()
    codec = exchange.simulator_codec()
    speed = _speed(ns.speed)
    if ns.market:
        from spikewatch.replay.market import market_tape, sources_of_tape

        sources = [
            source
            for path in ns.files
            for source in sources_of_tape(load_tape([path], ns.format, ns.symbol))
        ]
        tape: Any = market_tape(sources, ns.market, ns.quotes.split(","), seed=ns.seed)
        symbols = tape.symbols
    else:
        tape = load_tape(ns.files, ns.format, ns.symbol, codec.trade_frame)
        symbols = sorted({e.symbol for e in tape})
    faults = Faults(
        drop_every=ns.drop_every,
        malformed_every=ns.malformed_every,
        shutdown_after=ns.shutdown_after,
    )
    simulator = Simulator(tape, codec=codec, speed=speed, faults=faults, loop=ns.loop, seed=ns.seed)
    sim = SimulatorThread(simulator, ns.host, ns.port)
    sim.start()
    ws_base, rest_base = f"ws://{ns.host}:{sim.port}", f"http://{ns.host}:{sim.port}"
    recent = exchange.recent_trades(symbols[0], 5)
    venue = "" if ns.exchange == "binance" else f"--exchange {ns.exchange} "
    names = ",".join(symbols) if ns.market is None else f"a market of {len(symbols):,} symbols"
    shown = symbols if ns.market is None else symbols[:3]
    print(
        f"simulating {len(tape):,} trades of {names} ({ns.exchange}) at "
        f"{'max' if speed is None else f'{speed:g}x'} speed\n"
        f"  streams: {exchange.stream_url(ws_base, shown)}\n"
        + (f"  REST:    {rest_base}{recent.path}\n" if recent else "")
        + f"  use:     spikewatch run {venue}--ws-url {ws_base} "
        f"--rest-url {rest_base} --symbols {','.join(symbols) if ns.market is None else 'ALL'}",
        file=sys.stderr,
        flush=True,
    )
    with _sigterm_as_interrupt():
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            sim.stop()
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    """The simulator on the bundled recording, and the full app against it."""
    from spikewatch.replay.simulator import Simulator, SimulatorThread
    from spikewatch.replay.tape import read_frame_lines, tape_from_frames

    speed = _demo_speed(ns.speed)
    recording = resources.files("spikewatch.data").joinpath(DEMO_RECORDING)
    with resources.as_file(recording) as path:
        tape = tape_from_frames(read_frame_lines(path))
    sim = SimulatorThread(Simulator(tape, speed=speed, loop=True))
    sim.start()
    with tempfile.TemporaryDirectory(prefix="spikewatch-demo-") as folder:
        flags = _flags(
            ns,
            "window",
            "threshold",
            "host",
            "port",
            "db",
            "web_threads",
            "log_level",
            "alert_profile",
        )
        flags.update(ws_url=sim.ws_url, rest_url=sim.rest_url, symbols="BTCUSDT")
        if flags["db"] is None:
            flags["db"] = str(Path(folder) / "demo.db")
        try:
            settings = load_settings(flags, config_path=ns.config)
        except ConfigError as exc:
            sim.stop()
            print(f"spikewatch: configuration error: {exc}", file=sys.stderr)
            return 2
        setup_logging(settings.log_level)
        banner = (
            f"\n  spikewatch demo: real BTCUSDT trades of 2024-08-08 23:54 UTC replayed at "
            f"{speed:g}x by a local exchange (no Binance needed)\n"
            "  dashboard: {url}\n"
            "  API:       {url}api/get_signal  {url}api/signals  {url}api/status\n"
            "  Ctrl-C to stop\n"
        )
        try:
            return _serve(settings, banner)
        finally:
            sim.stop()


# -- entry point -------------------------------------------------------------------------

_RUN_KEYS = (
    "alert_profile",
    "exchange",
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
    "record_dir",
)


def _serve(settings: Settings, banner: str = "") -> int:
    """:func:`cmd_run`, with a database that cannot be opened told in one line (exit 2)."""
    from spikewatch.config import resolve_profile
    from spikewatch.store.sqlite import StoreOpenError

    try:
        return cmd_run(resolve_profile(settings, live=True), banner)
    except StoreOpenError as exc:
        print(f"spikewatch: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spikewatch`` command; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "run")
    ns = build_parser().parse_args(args)
    try:
        if ns.command == "demo" or (ns.command == "run" and ns.demo):
            return cmd_demo(ns)
        if ns.command == "simulate":
            setup_logging(ns.log_level or "INFO")
            return cmd_simulate(ns)
        if ns.command == "replay":
            settings = load_settings(
                _flags(ns, "window", "threshold", "log_level", "exchange", "alert_profile"),
                config_path=ns.config,
            )
            setup_logging(settings.log_level)
            from spikewatch.replay_cli import cmd_replay

            return cmd_replay(ns, settings)
        if ns.command == "report":
            settings = load_settings(
                _flags(ns, "window", "threshold", "log_level", "exchange", "alert_profile"),
                config_path=ns.config,
            )
            setup_logging(settings.log_level)
            from spikewatch.report_cli import cmd_report

            return cmd_report(ns, settings)
        if ns.command in ("ingest", "detect"):
            from spikewatch.roles_cli import load_role_settings, role_command

            settings = load_role_settings(ns)
            setup_logging(settings.log_level)
            return role_command(ns)[1](ns, settings)
        if ns.command == "serve":
            from spikewatch.serve_cli import SERVE_KEYS, cmd_serve

            settings = load_settings(_flags(ns, *SERVE_KEYS), config_path=ns.config)
            setup_logging(settings.log_level)
            return cmd_serve(ns, settings)
        if ns.command == "record":
            settings = load_settings(
                _flags(ns, "exchange", "symbols", "ws_url", "log_level"), config_path=ns.config
            )
            setup_logging(settings.log_level)
            return cmd_record(ns, settings)
        settings = load_settings(_flags(ns, *_RUN_KEYS), config_path=ns.config)
    except ConfigError as exc:
        print(f"spikewatch: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    return _serve(settings)
