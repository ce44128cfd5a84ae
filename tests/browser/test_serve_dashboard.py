"""The dashboard on ``spikewatch serve``: the same page shows the alert log detect
workers wrote to PostgreSQL, newest first, and the alerts they announce afterwards, live,
with a fold replacing its row. Real serve process, NATS, PostgreSQL and headless Chromium."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path

import msgspec
import nats
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from spikewatch.alerting.pg_outbox import PostgresOutbox
from spikewatch.bus.alerts import alert_subject
from spikewatch.core.alerts import AlertEvent
from spikewatch.store.postgres import PostgresSignalStore

from helpers import CHROMIUM, CHROMIUM_ARGS, a_stored_alert
from roles_kit import NATS_URL, Deployment, deployment, start_serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CONFIG = (
    'alert_profile = "off"\n\n[[alerts]]\nname = "spikes"\ndetectors = ["volume_spike"]\n'
    "cooldown_s = 5\n"
)


def announce(dep: Deployment, events: list[AlertEvent]) -> None:
    """Publish as a detect worker does (on a thread of its own: Playwright's sync API
    holds this thread's event loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _announce(dep, events)).result(30)


async def _announce(dep: Deployment, events: list[AlertEvent]) -> None:
    nc = await nats.connect(NATS_URL, connect_timeout=5, allow_reconnect=False)
    try:
        for event in events:
            a = event.alert
            subject = alert_subject(a.exchange, a.symbol, dep.names.alert_prefix)
            await nc.publish(subject, msgspec.json.encode(event))
        await nc.flush()
    finally:
        await nc.close()


def alert_rows(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#alerts tbody tr.alert", "rows => rows.map(r => r.dataset.id)"
    )
    return ids


def test_the_dashboard_on_serve_lists_stored_alerts_and_shows_new_ones_live(
    tmp_path: Path,
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: the browser tests need Debian's Chromium")
    config = tmp_path / "alerts.toml"
    config.write_text(CONFIG)
    # the deployment outside Playwright: its clean-up runs asyncio on this thread
    with deployment(tmp_path, partitions=1) as dep, sync_playwright() as playwright:
        store = PostgresSignalStore(dep.postgres)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        try:
            outbox = PostgresOutbox(store.connection, ())
            stored = [AlertEvent(a_stored_alert("binance", n), opened=True) for n in (1, 2)]
            outbox.add(stored)  # written by a detect worker before serve started
            _, port = start_serve(dep, "--config", str(config))
            page = context.new_page()
            crashes: list[str] = []
            problems: list[str] = []
            page.on("pageerror", lambda exc: crashes.append(str(exc)))
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.set_default_timeout(15_000)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("() => window.spikewatch && window.spikewatch.ready")
            # serve has alert rules: the table opens on the alerts, newest first
            expect(page.locator("#view-alerts")).to_have_attribute("aria-selected", "true")
            expect(page.locator("#alerts tbody tr.alert")).to_have_count(2)
            assert alert_rows(page) == [stored[1].alert.id, stored[0].alert.id]
            # a detect worker stores and announces a new alert, then a fold of the first
            new = AlertEvent(a_stored_alert("binance", 3), opened=True)
            fold = AlertEvent(a_stored_alert("binance", 1, signals=3), opened=False)
            outbox.add([new])
            announce(dep, [new])
            expect(page.locator("#alerts tbody tr.alert")).to_have_count(3)
            assert alert_rows(page)[0] == new.alert.id
            outbox.add([fold])
            announce(dep, [fold])
            row = page.locator(f'#alerts tbody tr[data-id="{fold.alert.id}"]')
            expect(row).to_have_attribute("data-signals", "3")
            expect(page.locator("#alerts tbody tr.alert")).to_have_count(3)
            page.screenshot(path=tmp_path / "serve-alerts.png")
            assert crashes == []
            assert [p for p in problems if "alert" in p.lower()] == []
        finally:
            context.close()
            browser.close()
            store.close()
