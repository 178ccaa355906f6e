"""The live dashboard in a real headless browser (Debian's chromium and chromium-driver,
driven by selenium): a round published while the page is open appears on it without a
reload, and the page loads nothing from anywhere but the coordinator.

``./scripts/test`` installs chromium with apt-get where it can; elsewhere this test is
skipped with the reason. ``HG_DASHBOARD_SCREENSHOT=path.png`` keeps a screenshot.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
import trio

from examples.wine import Wine

from .netutil import model_network, three_peer_network, wait_for
from .test_workload_plugins import Lies

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver; ./scripts/test does it when run as root)")


def open_browser():
    os.environ["SE_OFFLINE"] = "true"  # selenium must not try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def rounds_on_page(driver) -> list[int]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#rounds tbody tr')]"
        ".map(r => Number(r.dataset.round));")


def wait_in_browser(predicate, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("the page did not show it in time")
        time.sleep(0.2)


async def test_a_round_published_while_the_page_is_open_appears_without_a_reload(data_dir):
    async with trio.open_nursery() as nursery:
        coord = await three_peer_network(nursery, data_dir, rounds=1, max_rounds=0,
                                         round_pause=3.0)
        driver = await trio.to_thread.run_sync(open_browser)
        try:
            def load() -> int:
                driver.get(coord.http_url + "/")
                wait_in_browser(lambda: rounds_on_page(driver), 30)
                driver.execute_script("window.loadedOnce = true;")  # gone if it reloads
                return max(rounds_on_page(driver))

            seen_first = await trio.to_thread.run_sync(load)
            target = seen_first + 1
            await wait_for(lambda: coord.store.last_round() >= target and
                           coord.store.round_row(target)["status"] == "published",
                           timeout=60)

            def after() -> dict:
                # its row, and its point on the curve: the row may first show it still open
                wait_in_browser(lambda: target in rounds_on_page(driver) and driver.execute_script(
                    f"return document.querySelectorAll('#curve circle[data-round=\"{target}\"]')"
                    ".length;"), 30)
                if path := os.environ.get("HG_DASHBOARD_SCREENSHOT"):
                    driver.save_screenshot(path)
                return driver.execute_script("""return {
                    loadedOnce: window.loadedOnce === true,
                    peers: document.getElementById('peers-count').textContent,
                    points: document.querySelectorAll('#curve circle').length,
                    title: document.getElementById('curve-title').textContent,
                    workload: document.getElementById('workload').textContent,
                    resources: performance.getEntriesByType('resource').map(e => e.name),
                }""")

            page = await trio.to_thread.run_sync(after)
        finally:
            await trio.to_thread.run_sync(driver.quit)
        nursery.cancel_scope.cancel()

    assert page["loadedOnce"], "the page reloaded instead of updating itself"
    assert page["workload"] == "stats" and page["peers"] == "3 / 3"
    assert page["title"] == "mean_height over rounds" and page["points"] >= 2
    assert page["resources"], "the page fetched nothing (it should poll the state)"
    assert all(url.startswith(coord.http_url) for url in page["resources"]), page["resources"]


async def test_the_peers_table_shows_reputation_where_rounds_keep_it(data_dir):
    """Replicated rounds of the wine example, one of four peers reporting wrong weights:
    once it has been outvoted, the page's peers table shows every peer's reputation, the
    liar's below the others'."""
    async with trio.open_nursery() as nursery:
        coord, ids = await model_network(nursery, data_dir, Wine(replicas=2, segments=4),
                                         [Wine(), Wine(), Wine(), Lies()], secure=True,
                                         rounds=2)
        driver = await trio.to_thread.run_sync(open_browser)
        try:
            def shown() -> dict[str, str]:
                driver.get(coord.http_url + "/")
                rows = "return [...document.querySelectorAll('#peers tbody tr')].map(r => " \
                       "[...r.cells].map(c => c.textContent));"
                wait_in_browser(lambda: len(driver.execute_script(rows)) == 4, 30)
                return {r[0]: r[3] for r in driver.execute_script(rows)}

            table = await trio.to_thread.run_sync(shown)
        finally:
            await trio.to_thread.run_sync(driver.quit)
        nursery.cancel_scope.cancel()

    by_peer = {p: table[p[:8] + "…" + p[-6:]] for p in ids}
    assert "-" not in by_peer.values(), by_peer
    liar = float(by_peer[ids[3]])
    assert liar < min(float(by_peer[p]) for p in ids[:3]), by_peer
