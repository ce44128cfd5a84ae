"""Alerts end to end: the real app (``python app.py``) against the simulator serving
recorded BTCUSDT trades, its alert rules from a TOML file, delivering to a local signed
webhook: every alert that replay of the same trades opens reaches the receiver exactly
once, signed, also when the receiver is down at first (issue 11)."""

from __future__ import annotations

import hashlib
import hmac
import signal
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spikewatch.config import load_settings, resolve_profile
from spikewatch.core.kernel import GapPolicy
from spikewatch.exchanges.binance import BinanceSpot
from spikewatch.replay.simulator import Simulator, SimulatorThread
from spikewatch.replay.tape import tape_from_frames
from spikewatch.wiring import build_kernel

from helpers import free_port, get, start_app, wait_until
from receiver import Receiver

pytestmark = pytest.mark.slow

SECRET = "test-secret-5e1"


def config(folder: Path, sim: SimulatorThread, hook: str) -> Path:
    path = folder / "alerts.toml"
    path.write_text(
        f'ws_url = "{sim.ws_url}"\n'
        f'rest_url = "{sim.rest_url}"\n'
        f'db = "{folder / "live.db"}"\n'
        "[detectors.volume_spike]\n"
        "[detectors.big]\nkind = 'notional'\ntiers = [10000, 100000]\nunit = 'trade'\n"
        "[detectors.big_order]\nkind = 'notional'\ntiers = [40000]\nunit = 'order'\n"
        "[[alerts]]\nname = 'big'\ndetectors = ['big']\ncooldown_s = 5\n"
        "[[alerts]]\nname = 'sweep'\ndetectors = ['big_order']\ncooldown_s = 0\n"
        f"[destinations.hook]\nkind = 'webhook'\nurl = '{hook}'\nsecret = '{SECRET}'\n"
        "max_per_minute = 0\nmax_attempts = 1000\nbackoff_first_s = 0.2\nbackoff_cap_s = 1\n",
        encoding="utf-8",
    )
    return path


def replayed_alert_ids(frames: list[bytes], path: Path) -> list[str]:
    """The alerts replay of the same frames opens, with the same settings (the alert
    profile resolved as the live app resolves it)."""
    settings = resolve_profile(load_settings(env={}, config_path=path), live=True)
    kernel = build_kernel(settings, venues=(BinanceSpot(),), gap_policy=GapPolicy.RESET)
    ids = []
    for start in range(0, len(frames), 500):
        step = kernel.feed_frames("binance", frames[start : start + 500])
        ids += [e.alert.id for e in step.alerts if e.opened]
    ids += [e.alert.id for e in kernel.end().alerts if e.opened]
    return ids


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def hook_stats(port: int) -> dict[str, object]:
    (hook,) = get(port, "/api/status")["alerts"]["delivery"]["destinations"]
    return dict(hook)


@pytest.mark.parametrize("down_at_first", [False, True])
def test_the_app_delivers_each_alert_once_signed(
    btc_frames: list[bytes], tmp_path: Path, down_at_first: bool
) -> None:
    frames = btc_frames[:6000]
    sim = SimulatorThread(Simulator(tape_from_frames(frames), speed=40))
    sim.start()
    receiver = Receiver().start()
    try:
        path = config(tmp_path, sim, receiver.url())
        expected = replayed_alert_ids(frames, path)
        assert len(expected) >= 3
        if down_at_first:
            receiver.stop()  # refused connections: the alerts wait in the outbox
        port = free_port()
        app = start_app(port, tmp_path / "app.log", "--config", str(path))
        try:
            last = frames[-1].split(b'"t":', 1)[1].split(b",", 1)[0]
            wait_until(
                lambda: get(port, "/api/status")["symbols"]["BTCUSDT"]["last_trade_id"] == int(last)
            )
            if down_at_first:
                status = get(port, "/api/status")["alerts"]
                assert status["opened"] == len(expected)
                receiver.start()  # back: every pending alert goes out
            receiver.wait_for(len(expected), timeout=60)
            hook = hook_stats(port)
            wait_until(lambda: hook_stats(port)["pending"] == 0)
            metrics = scrape(port)
            assert metrics[("spikewatch_alerts_opened_total", ())] == len(expected)
            sent = ("spikewatch_alert_deliveries", (("destination", "hook"), ("state", "sent")))
            assert metrics[sent] == len(expected)
        finally:
            app.send_signal(signal.SIGTERM)
            app.wait(10)
        got = receiver.acknowledged()
        assert sorted(r.alert_id for r in got) == sorted(expected)
        for request in got:
            mac = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
            assert request.headers["x-spikewatch-signature"] == f"sha256={mac}"
            assert request.json()["id"] == request.alert_id
        assert hook["name"] == "hook"
    finally:
        receiver.stop()
        sim.stop()
