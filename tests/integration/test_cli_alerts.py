"""The alert commands from the command line, as a user runs them on the real futures day:
``spikewatch replay --alerts`` and ``spikewatch report`` (issue 11, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DAY = "binance-usdm-BTCUSDT-trades-2020-02-22.csv.gz"


def spikewatch(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "spikewatch", *args],
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_replay_alerts_writes_one_json_line_per_alert(fixtures_dir: Path, tmp_path: Path) -> None:
    done = spikewatch(
        tmp_path, "replay", str(fixtures_dir / DAY), "--exchange", "binance-usdm", "--alerts"
    )
    assert done.returncode == 0, done.stderr
    alerts = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(alerts) == 60  # the shipped profile on this day (docs/ALERTS.md)
    for alert in alerts:
        assert {"timestamp", "exchange", "symbol", "rule", "side", "price", "usd_value"} <= set(
            alert
        )
    assert {a["rule"] for a in alerts} == {"whale", "surge"}
    assert "60 alerts" in done.stderr.decode()


def test_replay_alerts_refuses_a_table_output(fixtures_dir: Path, tmp_path: Path) -> None:
    done = spikewatch(
        tmp_path, "replay", str(fixtures_dir / DAY), "--alerts", "--out", str(tmp_path / "a.csv")
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip() == (
        "spikewatch: --alerts writes JSON lines: use --out - or a .jsonl file name"
    )


def test_report_writes_the_page_and_its_data(fixtures_dir: Path, tmp_path: Path) -> None:
    done = spikewatch(
        tmp_path,
        "report",
        str(fixtures_dir / DAY),
        "--exchange",
        "binance-usdm",
        "--json",
        "day.json",
        "--sweep",
        "whale=100000,250000",
    )
    assert done.returncode == 0, done.stderr
    assert "surges caught 34/34" in done.stderr.decode()
    data = json.loads((tmp_path / "day.json").read_text())
    assert data["quality"]["alert_minutes"] == 53
    assert [row["value"] for row in data["sweep"]] == [100_000, 250_000]
    page = (tmp_path / "report.html").read_text()
    assert "53 of 1440" in page


def test_report_names_a_bad_sweep_in_one_line(fixtures_dir: Path, tmp_path: Path) -> None:
    done = spikewatch(tmp_path, "report", str(fixtures_dir / DAY), "--sweep", "big=1,2")
    assert done.returncode == 2
    assert done.stderr.decode().splitlines() == [
        "spikewatch: --sweep big: no such detector (one of surge, whale, whale_order)"
    ]


def test_the_demo_runs_the_alert_profile(tmp_path: Path) -> None:
    """`python app.py --demo --alert-profile default`: the demo's app has the rules."""
    from helpers import free_port, get, start_app, wait_until

    port = free_port()
    app = start_app(port, tmp_path / "demo.log", "--demo", "--alert-profile", "default")
    try:
        alerts = wait_until(lambda: get(port, "/api/status")["alerts"])
        assert alerts["rules"] == ["whale", "surge"]
        assert get(port, "/api/alerts")["enabled"] is True
    finally:
        app.terminate()
        app.wait(10)
