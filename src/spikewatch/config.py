"""The one typed configuration, read once at start-up.

Layers, each overriding the one before: defaults (here), environment variables
``SPIKEWATCH_<NAME>``, an optional TOML file (``--config`` or ``SPIKEWATCH_CONFIG``), then
command-line flags. An unknown key or a bad value raises :class:`ConfigError` naming the key
and where it came from. This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from spikewatch.alerting.destinations import Destination
from spikewatch.core.alerts import AlertRule
from spikewatch.core.detectors import DETECTORS, DetectorParams
from spikewatch.core.profile import PROFILE_DETECTORS
from spikewatch.core.symbolsets import SymbolSet, parse_symbol_set
from spikewatch.exchanges import EXCHANGES

ENV_PREFIX = "SPIKEWATCH_"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(ValueError):
    """A configuration key is unknown or has a bad value."""


class ExchangeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An ``[exchanges.<name>]`` table: for the exchange that runs, each key given here
    overrides the flat setting of the same name (flags still win)."""

    symbols: list[str] | None = None
    ws_url: str | None = None
    rest_url: str | None = None
    api_key: str | None = None
    max_backfill: int | None = None
    reconnect_max_delay: float | None = None
    rotate_after: float | None = None
    watchdog_silence: float | None = None

    def __repr__(self) -> str:
        # never show a secret in a log line or a traceback
        shown = {k: getattr(self, k) for k in self.__struct_fields__ if getattr(self, k)}
        if shown.get("api_key"):
            shown["api_key"] = "***"
        return "ExchangeConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


#: The settings an [exchanges.<name>] table may hold.
EXCHANGE_KEYS: tuple[str, ...] = ExchangeConfig.__struct_fields__


class DetectorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A ``[detectors.<name>]`` table: one detector, of ``kind`` (default: the table's
    name), with its own window and threshold (default: the flat ``window`` and
    ``threshold``)."""

    name: str
    kind: str = ""
    window: int | None = None
    threshold: Decimal | None = None
    #: the kind's own keys (``tiers``, ``unit``, ``bucket_s``... see docs/ALERTS.md)
    options: dict[str, Any] = {}


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Every setting of spikewatch with its default."""

    exchange: str = "binance"  # "binance" (spot) or "binance-usdm" (USD-M futures)
    # symbols to watch, or ALL (every trading pair) or ALL:USDT,BTC (of these quotes)
    symbols: tuple[str, ...] = ("BTCUSDT",)
    # seconds between reads of the exchange's listing (new pairs watched, delisted let go)
    symbols_refresh_s: float = 300.0
    # streams (symbols) per WebSocket connection; more symbols open more connections
    streams_per_connection: int = 200
    # one-second bars (the chart's history) kept per symbol; 0: an hour, or 5 minutes for
    # ALL (2,000 symbols with an hour of bars each would take about 400 MB)
    bar_seconds: int = 0
    # -- the distributed mode (spikewatch ingest | detect | serve; docs/DISTRIBUTED.md) --
    nats_url: str = "nats://127.0.0.1:4222"  # NATS with JetStream
    # PostgreSQL URL for the signal history of the distributed roles, e.g.
    # postgresql://postgres@127.0.0.1:5432/test ("": SQLite at db, the one-process mode)
    postgres: str = ""
    bus_partitions: int = 8  # partitions of the trade stream (fixed for the stream's life)
    bus_prefix: str = "spikewatch"  # stream, subject and bucket names start with it
    # copies of each stream and bucket in a NATS cluster (3 on a 3-node cluster; a server
    # alone: 1); set when they are made (an existing stream keeps its own)
    bus_replicas: int = 1
    # where `detect` starts a partition that has no snapshot yet (a snapshot always wins):
    # "snapshot-or-earliest" (the oldest trade the stream keeps: exact, but replays up to
    # the stream's retention), "snapshot-or-latest" (the tail: each symbol's first window
    # warms up from live trades), or "snapshot-or-<N>s|m|h" (N back: enough trades to fill
    # the windows, e.g. snapshot-or-15m)
    detect_start: str = "snapshot-or-earliest"
    # port of the Prometheus /metrics and /healthz of `ingest` and `detect` (on `host`);
    # 0: none (several workers on one host each need a port of their own)
    metrics_port: int = 0
    window: int = 200  # trades in the rolling window
    threshold: Decimal = Decimal(10)  # spike when qty > threshold * window mean
    host: str = "127.0.0.1"
    port: int = 5000
    db: str = "spikewatch.db"  # SQLite file, or ":memory:"
    # days signals and delivered alerts are kept (0: for ever); pruned by the store's
    # writer (run) or by detect (PostgreSQL); at least 1 (a replay must never raise again
    # an alert already forgotten: detect replays at most the trade stream's 6 h)
    retention_days: float = 0.0
    # stream base URL (the exchange's routes, e.g. /stream?streams=..., are appended);
    # empty: the exchange's own (wss://stream.binance.com:9443 for spot)
    ws_url: str = ""
    rest_url: str = ""  # REST base URL; empty: the exchange's own
    api_key: str = ""  # sent only where an exchange's look-up needs one (futures backfill)
    log_level: str = "INFO"
    # WSGI worker threads; each live-stream client holds one while connected
    web_threads: int = 256
    reconnect_max_delay: float = 30.0  # seconds, cap of the exponential backoff
    rotate_after: float = 23.5 * 3600  # seconds; Binance cuts connections at 24 h
    store_queue: int = 10_000  # signals waiting for the SQLite writer
    record_dir: str = ""  # when set, raw frames are also recorded here (gzip JSON lines)
    max_backfill: int = 100_000  # trades fetched over REST to fill one gap, at most
    checkpoint_interval: float = 5.0  # seconds between saves of detector state
    watchdog_silence: float = 10.0  # seconds; a symbol silent for long (scaled) is resubscribed
    api_token: str = ""  # needed by state-changing endpoints (always, when not on loopback)
    # [exchanges.<name>] tables, by exchange name (TOML only)
    exchanges: dict[str, ExchangeConfig] = {}
    # [detectors.<name>] tables (TOML only); none: one volume_spike of window/threshold
    detectors: tuple[DetectorConfig, ...] = ()
    # "default": the shipped alert profile (its detectors and rules, docs/ALERTS.md) on
    # top of the configured ones; "off": only what is configured; "auto": on in the live
    # app (`run`, `demo`), off in `replay` (raw signals) unless a rule names its detectors
    alert_profile: str = "auto"
    # [[alerts]] rules (TOML only): detectors, symbols, min_usd, severity, cooldown_s
    alerts: tuple[AlertRule, ...] = ()
    # [destinations.<name>] tables (TOML only): where alerts are delivered
    destinations: tuple[Destination, ...] = ()
    # USD per unit of quote assets that are not USD-stable, e.g. {ETH = 2500} (TOML only);
    # without one, the live <asset>USDT price of the same feed is used
    usd_rates: dict[str, float] = {}

    def __repr__(self) -> str:
        # never show a secret in a log line or a traceback
        shown = {k: getattr(self, k) for k in self.__struct_fields__}
        for secret in ("api_token", "api_key"):
            if shown[secret]:
                shown[secret] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def symbol_set(self) -> SymbolSet:
        """What ``symbols`` names (checked at start: this cannot fail then)."""
        return parse_symbol_set(self.symbols)

    @property
    def named_symbols(self) -> tuple[str, ...]:
        """The symbols named, or () for ALL (resolved from the exchange's listing)."""
        return () if self.symbol_set().is_all else self.symbols

    def __post_init__(self) -> None:
        _check(
            self.exchange in EXCHANGES,
            "exchange",
            f"must be one of {', '.join(sorted(EXCHANGES))}, got {self.exchange!r}",
        )
        venue = EXCHANGES[self.exchange]
        for name in self.exchanges:
            _check(
                name in EXCHANGES,
                "exchanges",
                f"[exchanges.{name}]: no such exchange (one of {', '.join(sorted(EXCHANGES))})",
            )
        seen = set()
        for detector in self.detectors:
            kind = detector.kind or detector.name
            _check(
                kind in DETECTORS,
                "detectors",
                f"[detectors.{detector.name}]: no detector kind {kind!r} "
                f"(one of {', '.join(sorted(DETECTORS))})",
            )
            window = detector.window if detector.window is not None else self.window
            threshold = detector.threshold if detector.threshold is not None else self.threshold
            _check(
                2 <= window <= 1_000_000,
                "detectors",
                f"[detectors.{detector.name}] window: must be between 2 and 1000000",
            )
            _check(
                threshold.is_finite() and threshold > 0,
                "detectors",
                f"[detectors.{detector.name}] threshold: must be a number > 0",
            )
            try:  # each kind checks its own keys
                built = DETECTORS[kind](detector_params(self, detector))
            except (ValueError, msgspec.ValidationError) as exc:
                raise ValueError(f"detectors: [detectors.{detector.name}] {exc}") from None
            _check(
                built.key not in seen,
                "detectors",
                f"[detectors.{detector.name}] repeats another detector's kind and parameters",
            )
            seen.add(built.key)
        _check(
            self.alert_profile in ALERT_PROFILES,
            "alert_profile",
            f"must be one of {', '.join(ALERT_PROFILES)}, got {self.alert_profile!r}",
        )
        names = {d.name for d in self.detectors} or {"volume_spike"}
        if self.alert_profile != "off":
            names |= PROFILE_DETECTORS
        for rule in self.alerts:
            unknown = sorted(set(rule.detectors) - names)
            _check(
                not unknown,
                "alerts",
                f"rule {rule.name!r} names no configured detector {unknown[0] if unknown else ''!r}"
                f" (configured: {', '.join(sorted(names))})",
            )
        rule_names = [r.name for r in self.alerts]
        _check(len(set(rule_names)) == len(rule_names), "alerts", "a rule name is repeated")
        for destination in self.destinations:  # an unusable Apprise URL: named at start
            from spikewatch.alerting.senders import build_sender

            try:
                build_sender(destination)
            except ValueError as exc:
                raise ValueError(f"destinations: [destinations.{destination.name}] {exc}") from None
        destination_names = [d.name for d in self.destinations]
        _check(
            len(set(destination_names)) == len(destination_names),
            "destinations",
            "a destination name is repeated",
        )
        for asset, rate in self.usd_rates.items():
            _check(rate > 0, "usd_rates", f"{asset}: must be a number > 0")
        if not self.ws_url:
            msgspec.structs.force_setattr(self, "ws_url", venue.default_ws_url)
        if not self.rest_url:
            msgspec.structs.force_setattr(self, "rest_url", venue.default_rest_url)
        try:
            parse_symbol_set(self.symbols)
        except ValueError as exc:
            raise ValueError(f"symbols: {exc}") from None
        _check(self.symbols_refresh_s >= 10, "symbols_refresh_s", "must be >= 10 seconds")
        _check(0 <= self.bar_seconds <= 86_400, "bar_seconds", "must be between 0 and 86400")
        _check(
            all(
                "://" in url and url.split("://", 1)[0] in ("nats", "tls", "ws", "wss")
                for url in self.nats_url.split(",")
            ),
            "nats_url",
            f"{self.nats_url!r} is not a NATS URL (nats://host:4222), or a comma-separated "
            "list of a cluster's",
        )
        _check(
            not self.postgres or self.postgres.split("://", 1)[0] in ("postgresql", "postgres"),
            "postgres",
            "must be a PostgreSQL URL (postgresql://user@host:5432/db)",
        )
        _check(1 <= self.bus_partitions <= 1024, "bus_partitions", "must be between 1 and 1024")
        try:
            detect_start(self.detect_start)
        except ValueError as exc:
            raise ValueError(f"detect_start: {exc}") from None
        _check(0 <= self.metrics_port <= 65535, "metrics_port", "must be between 0 and 65535")
        _check(1 <= self.bus_replicas <= 5, "bus_replicas", "must be between 1 and 5 (JetStream)")
        _check(
            bool(re.fullmatch(r"[A-Za-z0-9_-]{1,32}", self.bus_prefix)),
            "bus_prefix",
            "letters, digits, - and _ only (1 to 32)",
        )
        most = venue(api_key=self.api_key).capabilities.max_streams_per_connection
        _check(
            1 <= self.streams_per_connection <= most,
            "streams_per_connection",
            f"must be between 1 and {most} ({self.exchange}'s limit)",
        )
        _check(2 <= self.window <= 1_000_000, "window", "must be between 2 and 1000000")
        _check(
            self.threshold.is_finite() and self.threshold > 0, "threshold", "must be a number > 0"
        )
        _check(0 <= self.port <= 65535, "port", "must be between 0 and 65535")
        _check(bool(self.host), "host", "must not be empty")
        _check(bool(self.db), "db", "must be a file path or ':memory:'")
        _check(
            self.retention_days == 0 or 1 <= self.retention_days <= 36_500,
            "retention_days",
            "must be 0 (keep everything) or between 1 and 36500 days",
        )
        for key in ("ws_url", "rest_url"):
            url: str = getattr(self, key)
            scheme = ("ws://", "wss://") if key == "ws_url" else ("http://", "https://")
            _check(url.startswith(scheme), key, f"must start with {' or '.join(scheme)}")
        _check(self.log_level in _LOG_LEVELS, "log_level", f"must be one of {_LOG_LEVELS}")
        _check(1 <= self.web_threads <= 1024, "web_threads", "must be between 1 and 1024")
        _check(self.reconnect_max_delay >= 1, "reconnect_max_delay", "must be >= 1 second")
        _check(self.rotate_after >= 1, "rotate_after", "must be >= 1 second")
        _check(self.store_queue >= 1, "store_queue", "must be >= 1")
        _check(self.max_backfill >= 0, "max_backfill", "must be >= 0")
        _check(self.checkpoint_interval > 0, "checkpoint_interval", "must be > 0")
        _check(self.watchdog_silence >= 1, "watchdog_silence", "must be >= 1 second")


class StartPosition(msgspec.Struct, frozen=True):
    """Where ``detect`` starts a partition without a snapshot: ``earliest`` (the oldest
    trade the stream keeps), ``latest`` (after the newest) or ``back`` (``seconds`` ago)."""

    kind: str
    seconds: float = 0.0


_DETECT_START = re.compile(r"snapshot-or-(?:(earliest|latest)|(\d+(?:\.\d+)?)(s|m|h))")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


def detect_start(value: str) -> StartPosition:
    """The ``detect_start`` setting read (ValueError on a value it is not)."""
    match = _DETECT_START.fullmatch(value.strip().lower())
    if match is None:
        raise ValueError(
            f"must be snapshot-or-earliest, snapshot-or-latest or snapshot-or-<N>s|m|h "
            f"(e.g. snapshot-or-15m), got {value!r}"
        )
    if match.group(1):
        return StartPosition(match.group(1))
    seconds = float(match.group(2)) * _UNIT_S[match.group(3)]
    if not 0 < seconds <= 30 * 86_400:
        raise ValueError(f"the time back must be more than 0 and at most 30 days, got {value!r}")
    return StartPosition("back", seconds)


#: Values of ``alert_profile``.
ALERT_PROFILES = ("auto", "default", "off")


def resolve_profile(settings: Settings, *, live: bool) -> Settings:
    """``settings`` with an ``auto`` alert profile made definite: on in the live app
    (``live``), else only when an ``[[alerts]]`` rule names one of its detectors."""
    if settings.alert_profile != "auto":
        return settings
    named = any(PROFILE_DETECTORS & set(rule.detectors) for rule in settings.alerts)
    return msgspec.structs.replace(settings, alert_profile="default" if live or named else "off")


def detector_params(settings: Settings, table: DetectorConfig, usd: Any = None) -> DetectorParams:
    """What a detector's builder gets of its table (flat window/threshold by default)."""
    return DetectorParams(
        name=table.name,
        window=table.window if table.window is not None else settings.window,
        threshold=table.threshold if table.threshold is not None else settings.threshold,
        options=dict(table.options),
        usd=usd,
    )


def _s(count: int) -> str:
    """The plural ending for ``count`` things."""
    return "" if count == 1 else "s"


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{key}: {message}")


FIELDS: tuple[str, ...] = Settings.__struct_fields__


def _normalise(key: str, value: Any) -> Any:
    if key == "symbols":
        if isinstance(value, str) and value.strip().upper().startswith("ALL:"):
            return [value.strip().upper().replace(" ", "")]  # ALL:USDT,BTC is one set
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, list | tuple):
            return [str(s).strip().upper() for s in items if str(s).strip()]
    if key == "exchange" and isinstance(value, str):
        return value.strip().lower()
    if key in ("log_level",) and isinstance(value, str):
        return value.upper()
    if key == "threshold" and isinstance(value, float):
        return repr(value)  # the decimal the user wrote, not the binary float
    return value


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    out: dict[str, tuple[Any, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in FIELDS:
            raise ConfigError(f"unknown setting {name} (environment)")
        out[key] = (value, f"environment {name}")
    return out


def _from_toml(path: Path) -> dict[str, tuple[Any, str]]:
    try:
        with path.open("rb") as handle:
            doc = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    if isinstance(doc.get("spikewatch"), dict):
        others = sorted(k for k in doc if k not in ("spikewatch", *_TABLES))
        if others:
            raise ConfigError(
                f"config file {path}: {others[0]!r} is outside the [spikewatch] table; "
                "put every setting inside it (or use no table at all)"
            )
        tables = {k: v for k, v in doc.items() if k in _TABLES}
        doc = {**doc["spikewatch"], **tables}
    out: dict[str, tuple[Any, str]] = {}
    for key, value in doc.items():
        if key not in FIELDS:
            raise ConfigError(f"unknown setting {key!r} in config file {path}")
        if key in _TABLES:
            value = _tables(key, value, path)
        out[key] = (value, f"config file {path}")
    return out


#: Settings given as TOML tables of tables: [exchanges.<name>], [detectors.<name>],
#: [destinations.<name>]; and as an array of tables: [[alerts]].
_TABLES = ("exchanges", "detectors", "destinations", "alerts")
#: The keys a [detectors.<name>] table has whatever its kind (the rest are the kind's).
_DETECTOR_KEYS = ("kind", "window", "threshold")


def _tables(key: str, value: Any, path: Path) -> Any:
    """``[exchanges.<name>]`` tables as a dict, ``[detectors.<name>]`` as a list with each
    table's name inside it; anything else is a clear error."""
    if key == "alerts":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"config file {path}: alerts must be [[alerts]] tables")
        return value
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ConfigError(
            f"config file {path}: {key} must be tables like [{key}.<name>], got {value!r}"
        )
    if key == "detectors":
        return [
            {
                "name": name,
                **{k: v for k, v in table.items() if k in _DETECTOR_KEYS},
                "options": {k: v for k, v in table.items() if k not in _DETECTOR_KEYS},
            }
            for name, table in value.items()
        ]
    if key == "destinations":
        return [{"name": name, **table} for name, table in value.items()]
    for name, table in value.items():
        unknown = sorted(set(table) - set(EXCHANGE_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown setting {unknown[0]!r} in [exchanges.{name}] of config file {path} "
                f"(it takes {', '.join(EXCHANGE_KEYS)})"
            )
    return value


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | Path | None = None,
) -> Settings:
    """Merge defaults, environment, TOML file and flags (``None`` flags are unset)."""
    env = os.environ if env is None else env
    layers: dict[str, tuple[Any, str]] = {}
    layers.update(_from_env(env))
    path = config_path or env.get(ENV_PREFIX + "CONFIG")
    if path:
        layers.update(_from_toml(Path(path)))
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key not in FIELDS:
            raise ConfigError(f"unknown setting {key!r}")
        layers[key] = (value, f"--{key.replace('_', '-')}")
    _apply_exchange_table(layers)
    raw = {key: _normalise(key, value) for key, (value, _) in layers.items()}
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), layers)) from None


def _apply_exchange_table(layers: dict[str, tuple[Any, str]]) -> None:
    """The running exchange's [exchanges.<name>] table overrides the flat settings it
    names, unless a flag set them."""
    exchange = str(layers.get("exchange", ("binance", ""))[0]).strip().lower()
    tables = layers.get("exchanges")
    if tables is None or not isinstance(tables[0], dict):
        return
    table = tables[0].get(exchange)
    if not isinstance(table, dict):
        return
    for key, value in table.items():
        if key in layers and layers[key][1].startswith("--"):
            continue
        layers[key] = (value, f"{tables[1]} [exchanges.{exchange}]")


#: msgspec's "Expected `<type>`" (the value has the wrong type), in a user's words.
_EXPECTED = {
    "int": "must be a whole number",
    "float": "must be a number",
    "decimal": "must be a number",
    "bool": "must be true or false",
    "str": "must be text",
    "array": "must be a list",
    "object": "must be a table",
}


def _explain(message: str, layers: Mapping[str, tuple[Any, str]]) -> str:
    match = re.search(r"at `\$\.(\w+)", message) or re.match(r"(\w+): ", message)
    key = match.group(1) if match else None
    if key and key in layers:
        value, source = layers[key]
        detail = re.sub(r" - at `\$\.\w+.*`$", "", message)
        if detail.startswith(f"{key}: "):
            detail = detail[len(key) + 2 :]
        expected = re.match(r"Expected `(\w+)[^`]*`, got `\w+`$", detail)
        if expected and expected.group(1) in _EXPECTED:
            detail = _EXPECTED[expected.group(1)]
        elif detail.startswith("Invalid decimal string"):
            detail = _EXPECTED["decimal"]
        return f"bad value for {key} = {value!r} (from {source}): {detail}"
    return f"bad configuration: {message}"
