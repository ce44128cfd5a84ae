"""The distributed roles' settings of issue 13: ``detect_start`` and ``metrics_port``,
from every layer (flag, environment, TOML), and a bad value named at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikewatch.config import ConfigError, StartPosition, detect_start, load_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("snapshot-or-earliest", StartPosition("earliest")),
        ("snapshot-or-latest", StartPosition("latest")),
        ("Snapshot-Or-Latest", StartPosition("latest")),
        ("snapshot-or-90s", StartPosition("back", 90.0)),
        ("snapshot-or-15m", StartPosition("back", 900.0)),
        ("snapshot-or-1.5h", StartPosition("back", 5400.0)),
    ],
)
def test_detect_start_reads_earliest_latest_or_a_time_back(
    text: str, expected: StartPosition
) -> None:
    assert detect_start(text) == expected


@pytest.mark.parametrize(
    "text",
    ["earliest", "15m", "snapshot-or-", "snapshot-or-0s", "snapshot-or-31d", "snapshot-or-720h1"],
)
def test_a_bad_detect_start_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="snapshot-or"):
        detect_start(text)


def test_the_defaults_replay_everything_and_serve_no_metrics() -> None:
    settings = load_settings({}, env={})
    assert settings.detect_start == "snapshot-or-earliest"
    assert settings.metrics_port == 0


def test_role_settings_come_from_env_toml_and_flags(tmp_path: Path) -> None:
    env = {"SPIKEWATCH_DETECT_START": "snapshot-or-latest", "SPIKEWATCH_METRICS_PORT": "9111"}
    assert load_settings({}, env=env).metrics_port == 9111
    assert load_settings({}, env=env).detect_start == "snapshot-or-latest"
    toml = tmp_path / "roles.toml"
    toml.write_text('detect_start = "snapshot-or-10m"\nmetrics_port = 9200\n')
    from_file = load_settings({}, env=env, config_path=toml)
    assert (from_file.detect_start, from_file.metrics_port) == ("snapshot-or-10m", 9200)
    flags = {"detect_start": "snapshot-or-30s", "metrics_port": "9300"}
    given = load_settings(flags, env=env, config_path=toml)
    assert (given.detect_start, given.metrics_port) == ("snapshot-or-30s", 9300)


@pytest.mark.parametrize(
    ("key", "value"), [("detect_start", "tail"), ("metrics_port", "70000"), ("metrics_port", "x")]
)
def test_a_bad_role_setting_names_its_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings({key: value}, env={})
