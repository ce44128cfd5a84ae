"""The one typed configuration: defaults < environment < TOML file < flags."""

from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from spikewatch.config import ConfigError, Settings, load_settings


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spikewatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_watch_btcusdt_on_localhost() -> None:
    settings = load_settings(flags={}, env={})
    assert settings.window == 200
    assert settings.threshold == Decimal(10)
    assert settings.symbols == ("BTCUSDT",)
    assert settings.host == "127.0.0.1"
    assert settings.port == 5000
    assert settings.exchange == "binance"
    assert settings.ws_url == "wss://stream.binance.com:9443"
    assert settings == Settings()


def test_environment_overrides_defaults() -> None:
    settings = load_settings(
        env={
            "SPIKEWATCH_WINDOW": "50",
            "SPIKEWATCH_THRESHOLD": "7.5",
            "SPIKEWATCH_PORT": "8080",
            "SPIKEWATCH_HOST": "0.0.0.0",
            "SPIKEWATCH_LOG_LEVEL": "debug",
        }
    )
    assert (settings.window, settings.threshold, settings.port) == (50, Decimal("7.5"), 8080)
    assert settings.host == "0.0.0.0"
    assert settings.log_level == "DEBUG"


def test_environment_without_the_prefix_is_not_read() -> None:
    settings = load_settings(env={"WINDOW": "50", "PORT": "1", "HOME": "/root"})
    assert (settings.window, settings.port) == (200, 5000)


def test_symbol_list_is_split_trimmed_and_upper_cased() -> None:
    settings = load_settings(env={"SPIKEWATCH_SYMBOLS": "btcusdt, ethusdt"})
    assert settings.symbols == ("BTCUSDT", "ETHUSDT")


def test_toml_file_overrides_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'window = 50\nthreshold = 7.5\nsymbols = ["ethusdt"]\n')
    settings = load_settings(
        env={"SPIKEWATCH_WINDOW": "30", "SPIKEWATCH_PORT": "8080"}, config_path=path
    )
    assert settings.window == 50
    assert settings.threshold == Decimal("7.5")  # the decimal written, not a binary float
    assert settings.symbols == ("ETHUSDT",)
    assert settings.port == 8080  # not in the file: the environment still counts


def test_toml_file_may_hold_a_spikewatch_table(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[spikewatch]\nwindow = 50\nport = 6000\n")
    settings = load_settings(env={}, config_path=path)
    assert (settings.window, settings.port) == (50, 6000)


def test_toml_file_named_in_the_environment_is_read(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "window = 50\n")
    settings = load_settings(env={"SPIKEWATCH_CONFIG": str(path), "SPIKEWATCH_WINDOW": "30"})
    assert settings.window == 50


def test_flags_override_the_toml_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "window = 50\nthreshold = 7.5\nport = 6000\n")
    settings = load_settings(
        flags={"window": 9, "threshold": None, "symbols": "solusdt"},
        env={"SPIKEWATCH_WINDOW": "30"},
        config_path=path,
    )
    assert settings.window == 9
    assert settings.threshold == Decimal("7.5")  # a None flag is unset, not a value
    assert settings.port == 6000
    assert settings.symbols == ("SOLUSDT",)


def test_unknown_environment_setting_stops_start_up() -> None:
    with pytest.raises(ConfigError, match=r"SPIKEWATCH_WINDOWW.*environment"):
        load_settings(env={"SPIKEWATCH_WINDOWW": "3"})


def test_unknown_toml_setting_stops_start_up(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "window = 50\nwindoww = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_path=path)
    assert "windoww" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_setting_inside_the_spikewatch_table_stops_start_up(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[spikewatch]\nwindoww = 3\n")
    with pytest.raises(ConfigError, match="windoww"):
        load_settings(env={}, config_path=path)


def test_setting_beside_the_spikewatch_table_is_not_silently_ignored(tmp_path: Path) -> None:
    # `port` at the top level of a file that also has a [spikewatch] table: it must either
    # take effect or stop start-up, never be dropped without a word
    path = write_toml(tmp_path, "port = 8080\n[spikewatch]\nwindow = 50\n")

    def outcome() -> int | str:
        try:
            return load_settings(env={}, config_path=path).port
        except ConfigError as exc:
            return str(exc)

    result = outcome()
    assert result == 8080 or "port" in str(result)


def test_unknown_flag_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="windoww"):
        load_settings(flags={"windoww": 3}, env={})


@pytest.mark.parametrize(
    ("env_key", "value", "field"),
    [
        ("SPIKEWATCH_WINDOW", "abc", "window"),
        ("SPIKEWATCH_WINDOW", "1", "window"),
        ("SPIKEWATCH_THRESHOLD", "-1", "threshold"),
        ("SPIKEWATCH_THRESHOLD", "0", "threshold"),
        ("SPIKEWATCH_THRESHOLD", "NaN", "threshold"),
        ("SPIKEWATCH_THRESHOLD", "abc", "threshold"),
        ("SPIKEWATCH_PORT", "70000", "port"),
        ("SPIKEWATCH_PORT", "-1", "port"),
        ("SPIKEWATCH_WS_URL", "http://x", "ws_url"),
        ("SPIKEWATCH_REST_URL", "ftp://x", "rest_url"),
        ("SPIKEWATCH_SYMBOLS", "BTC-USDT", "symbols"),
        ("SPIKEWATCH_SYMBOLS", "btcusdt,BTCUSDT", "symbols"),
        ("SPIKEWATCH_SYMBOLS", " , ", "symbols"),
        ("SPIKEWATCH_LOG_LEVEL", "LOUD", "log_level"),
        ("SPIKEWATCH_EXCHANGE", "kraken", "exchange"),
    ],
)
def test_bad_environment_value_names_the_key_and_its_source(
    env_key: str, value: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={env_key: value})
    message = str(info.value)
    assert field in message
    assert f"environment {env_key}" in message


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('window = "abc"', "window"),
        ("window = true", "window"),
        ("threshold = -1", "threshold"),
        ("port = 70000", "port"),
        ('ws_url = "http://x"', "ws_url"),
        ("symbols = []", "symbols"),
    ],
)
def test_bad_toml_value_names_the_key_and_the_file(tmp_path: Path, line: str, field: str) -> None:
    path = write_toml(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_path=path)
    message = str(info.value)
    assert field in message
    assert f"config file {path}" in message


@pytest.mark.parametrize(
    ("flags", "source"),
    [
        ({"window": "abc"}, "--window"),
        ({"threshold": "-1"}, "--threshold"),
        ({"port": 70000}, "--port"),
        ({"ws_url": "http://x"}, "--ws-url"),
    ],
)
def test_bad_flag_value_names_the_flag(flags: dict[str, Any], source: str) -> None:
    with pytest.raises(ConfigError, match=f"from {source}"):
        load_settings(flags=flags, env={})


def test_bad_value_in_a_lower_layer_is_harmless_when_overridden(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 6000\n")
    settings = load_settings(env={"SPIKEWATCH_PORT": "70000"}, config_path=path)
    assert settings.port == 6000


def test_missing_config_file_stops_start_up(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=r"nowhere\.toml"):
        load_settings(env={}, config_path=missing)


def test_config_file_that_is_not_toml_stops_start_up(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "window = [\n")
    with pytest.raises(ConfigError, match=r"config file .*spikewatch\.toml"):
        load_settings(env={}, config_path=path)


def test_settings_are_frozen() -> None:
    settings = load_settings(env={})
    with pytest.raises(AttributeError):
        settings.window = 5  # type: ignore[misc]


# -- [exchanges.<name>] and [detectors.<name>] tables ------------------------------------


def test_exchange_defaults_follow_the_exchange() -> None:
    spot = load_settings(env={})
    futures = load_settings({"exchange": "binance-usdm"}, env={})
    assert (spot.ws_url, spot.rest_url) == (
        "wss://stream.binance.com:9443",
        "https://api.binance.com",
    )
    assert (futures.ws_url, futures.rest_url) == (
        "wss://fstream.binance.com",
        "https://fapi.binance.com",
    )


def test_unknown_exchange_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"exchange.*binance, binance-usdm.*'kraken'"):
        load_settings({"exchange": "kraken"}, env={})


def test_the_running_exchange_table_overrides_flat_settings(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'exchange = "binance-usdm"\nsymbols = ["BTCUSDT"]\n'
        '[exchanges.binance-usdm]\nsymbols = ["ethusdt", "btcusdt"]\n'
        'rest_url = "http://127.0.0.1:9000"\napi_key = "k3y"\n'
        '[exchanges.binance]\nsymbols = ["XRPUSDT"]\n',
    )
    settings = load_settings(env={}, config_path=path)
    assert settings.symbols == ("ETHUSDT", "BTCUSDT")
    assert settings.rest_url == "http://127.0.0.1:9000"
    assert settings.ws_url == "wss://fstream.binance.com"  # not in the table: the default
    assert settings.api_key == "k3y"
    assert "k3y" not in repr(settings)
    flagged = load_settings({"symbols": "SOLUSDT"}, env={}, config_path=path)
    assert flagged.symbols == ("SOLUSDT",)  # a flag still wins over the table


def test_exchange_tables_may_sit_beside_a_spikewatch_table(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        '[spikewatch]\nexchange = "binance"\n[exchanges.binance]\nsymbols = ["ETHUSDT"]\n',
    )
    assert load_settings(env={}, config_path=path).symbols == ("ETHUSDT",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[exchanges.kraken]\nsymbols = ['X']\n", r"\[exchanges.kraken\]: no such exchange"),
        ("[exchanges.binance]\nsymbolz = ['X']\n", r"'symbolz' in \[exchanges.binance\]"),
        ("exchanges = 3\n", r"exchanges must be tables like \[exchanges.<name>\]"),
        ("[exchanges.binance]\nsymbols = ['B!D']\n", r"symbols.*'B!D' is not a symbol"),
        ("[detectors.wild]\nwindow = 5\n", r"\[detectors.wild\]: no detector kind 'wild'"),
        ("[detectors.volume_spike]\nwindow = 1\n", r"\[detectors.volume_spike\] window"),
        ("[detectors.volume_spike]\nspeed = 1\n", r"speed"),
        (
            "[detectors.a]\nkind = 'volume_spike'\n[detectors.b]\nkind = 'volume_spike'\n",
            r"\[detectors.b\] repeats another detector",
        ),
    ],
)
def test_bad_tables_stop_start_up_naming_them(tmp_path: Path, text: str, message: str) -> None:
    path = write_toml(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, config_path=path)


def test_detector_tables_configure_several_detectors(tmp_path: Path) -> None:
    from spikewatch.wiring import detector_factory

    path = write_toml(
        tmp_path,
        "window = 300\n"
        "[detectors.volume_spike]\nthreshold = 8\n"
        "[detectors.fast]\nkind = 'volume_spike'\nwindow = 50\nthreshold = 4.5\n",
    )
    settings = load_settings(env={}, config_path=path)
    detectors = detector_factory(settings)("binance", "BTCUSDT")
    assert [d.key for d in detectors] == ["volume_spike-w300-x8", "volume_spike-w50-x4.5"]
    plain = detector_factory(load_settings(env={}))("binance", "BTCUSDT")
    assert [d.key for d in plain] == ["volume_spike-w200-x10"]


def test_alert_tables_configure_detectors_rules_destinations_and_the_profile(
    tmp_path: Path,
) -> None:
    from spikewatch.wiring import alert_rules, detector_factory

    path = write_toml(
        tmp_path,
        'alert_profile = "default"\n'
        "[detectors.volume_spike]\n"
        "[detectors.small_whale]\nkind = 'notional'\ntiers = [50000]\nunit = 'trade'\n"
        "[[alerts]]\nname = 'small'\ndetectors = ['small_whale']\nseverity = 'info'\n"
        "[destinations.hook]\nkind = 'webhook'\nurl = 'http://127.0.0.1:9/in'\n"
        "secret = 'hush-9f3'\n"
        "[usd_rates]\nETH = 2500\n",
    )
    settings = load_settings(env={}, config_path=path)
    names = [d.name for d in detector_factory(settings)("binance", "BTCUSDT")]
    assert names == ["volume_spike", "small_whale", "whale", "whale_order", "surge"]
    rules = alert_rules(settings)
    assert rules is not None
    assert [r.name for r in rules.rules] == ["small", "whale", "surge"]
    assert [d.name for d in settings.destinations] == ["hook"]
    assert "hush-9f3" not in repr(settings)  # the secret is never shown
    assert settings.usd_rates == {"ETH": 2500.0}
    assert alert_rules(load_settings(env={})) is None  # no rules, no profile: signals only


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            "[detectors.s]\nkind = 'surge'\nfactr = 3\n",
            "[detectors.s] Object contains unknown field `factr`",
        ),
        (
            "[detectors.n]\nkind = 'notional'\nunit = 'fill'\n",
            "[detectors.n] unit must be 'order' or 'trade'",
        ),
        (
            "[[alerts]]\nname = 'a'\ndetectors = ['nope']\n",
            "rule 'a' names no configured detector 'nope'",
        ),
        (
            "[[alerts]]\nname = 'a'\ndetectors = ['volume_spike']\nseverity = 'loud'\n",
            "severity must be one of",
        ),
        ("alert_profile = 'loud'\n", "alert_profile"),
        ("[destinations.h]\nkind = 'webhook'\nurl = 'http://x'\n", "a webhook needs a secret"),
        ("[destinations.t]\nurl = 'nosuchscheme://x'\n", "[destinations.t] destination 't'"),
    ],
)
def test_bad_alert_tables_fail_at_start_naming_the_table(
    tmp_path: Path, toml: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_path=write_toml(tmp_path, toml))
    assert expected in str(info.value)


# -- the wording of errors: the real problem, no word twice ------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"window": "abc"}, "bad value for window = 'abc' (from --window): must be a whole number"),
        ({"window": "2.5"}, "bad value for window = '2.5' (from --window): must be a whole number"),
        ({"port": "abc"}, "bad value for port = 'abc' (from --port): must be a whole number"),
        (
            {"threshold": "abc"},
            "bad value for threshold = 'abc' (from --threshold): must be a number",
        ),
        (
            {"symbols": "B" * 31},
            f"bad value for symbols = '{'B' * 31}' (from --symbols): "
            f"'{'B' * 31}' is 31 characters long; a symbol has 2 to 30",
        ),
        (
            {"symbols": "B"},
            "bad value for symbols = 'B' (from --symbols): 'B' is 1 character long; "
            "a symbol has 2 to 30",
        ),
        (
            {"symbols": "BTC-USDT"},
            "bad value for symbols = 'BTC-USDT' (from --symbols): 'BTC-USDT' is not a symbol",
        ),
    ],
)
def test_a_bad_flag_is_told_what_is_wrong_with_it(flags: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(flags=flags, env={})
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("window = 2.5", "must be a whole number"),
        ('threshold = "x"', "must be a number"),
        ("symbols = 5", "must be a list"),
        ("web_threads = true", "must be a whole number"),
    ],
)
def test_a_toml_value_of_the_wrong_type_says_which_type_it_must_be(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = write_toml(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_path=path)
    assert str(info.value).endswith(f": {expected}")
    assert "Expected `" not in str(info.value)


@pytest.mark.parametrize(
    "env",
    [
        {"SPIKEWATCH_WINDOW": "abc"},
        {"SPIKEWATCH_WINDOW": "1"},
        {"SPIKEWATCH_THRESHOLD": "NaN"},
        {"SPIKEWATCH_PORT": "70000"},
        {"SPIKEWATCH_WS_URL": "http://x"},
        {"SPIKEWATCH_SYMBOLS": "btcusdt,BTCUSDT"},
        {"SPIKEWATCH_SYMBOLS": " , "},
        {"SPIKEWATCH_LOG_LEVEL": "LOUD"},
        {"SPIKEWATCH_EXCHANGE": "kraken"},
        {"SPIKEWATCH_WEB_THREADS": "0"},
        {"SPIKEWATCH_STORE_QUEUE": "0"},
        {"SPIKEWATCH_NOPE": "1"},
    ],
)
def test_no_config_error_repeats_a_word(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    words = [w.strip(":;,.()'\"`").lower() for w in str(info.value).split()]
    doubled = [a for a, b in itertools.pairwise(words) if a and a == b]
    assert doubled == [], str(info.value)


def test_the_distributed_settings_are_checked_naming_the_key() -> None:
    settings = load_settings(
        {"nats_url": "nats://n1:4222,nats://n2:4222", "bus_replicas": "3"}, env={}
    )
    assert (settings.nats_url, settings.bus_replicas) == ("nats://n1:4222,nats://n2:4222", 3)
    for flags, key in (
        ({"nats_url": "http://n1:4222"}, "nats_url"),
        ({"nats_url": "nats://n1:4222,n2"}, "nats_url"),
        ({"postgres": "mysql://db"}, "postgres"),
        ({"bus_replicas": "7"}, "bus_replicas"),
        ({"bus_partitions": "0"}, "bus_partitions"),
        ({"bus_prefix": "a.b"}, "bus_prefix"),
    ):
        with pytest.raises(ConfigError, match=key):
            load_settings(flags, env={})
