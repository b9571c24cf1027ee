"""The dashboard in a real browser: `serve run` of a fast synthetic market with API keys on,
driven in Debian's headless chromium by Playwright.

It loads with no console error; the chart holds candles; a new prediction arrives over the
WebSocket and shows in the table and on the chart; choosing another series redraws; the
health panel lists every feed; a wrong key shows the 401 and the right one loads the data.
Screenshots of each state go to a temporary folder; their paths are printed.
"""

from __future__ import annotations

import playwright.sync_api as playwright_api
import pytest

from orchestrator.bench.browser import (
    dashboard_config,
    launch_chromium,
    new_port,
    serve_run,
    wait_for_predictions,
)

KEY = "e2e-dashboard-key"
SYMBOLS = 12
FEW_SECONDS = 15_000  # ms: a candle closes every second, a prediction follows it


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    port = new_port()
    config = dashboard_config(tmp, port, SYMBOLS, api={"require_api_key": True})
    with serve_run(config, tmp / "serve.log", env={"TICKCAST_API_KEYS": KEY}) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_for_predictions(base, proc, 180, minimum=SYMBOLS * 3, headers={"X-API-Key": KEY})
        yield base, tmp


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


class Shots:
    def __init__(self, folder):
        self.folder = folder
        folder.mkdir(exist_ok=True)

    def take(self, page, name: str) -> None:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path))
        print(f"screenshot: {path}")


def _watch(page) -> list[str]:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    return errors


def _number(page, selector: str, attribute: str) -> int:
    return int(page.get_attribute(selector, attribute) or 0)


def test_the_dashboard_draws_live_data_with_no_console_error(app, browser):
    base, tmp = app
    shots = Shots(tmp / "screenshots")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(f"sessionStorage.setItem('tickcast.apiKey', '{KEY}')")
    page = context.new_page()
    errors = _watch(page)
    page.goto(f"{base}/")

    page.wait_for_function("Number(document.querySelector('#chart').dataset.candles) > 0")
    page.wait_for_selector("#predictions tbody tr[data-key]")
    playwright_api.expect(page.locator("#conn-state")).to_contain_text("live", timeout=FEW_SECONDS)
    shots.take(page, "1-loaded")

    series = page.get_attribute("#chart", "data-series")
    exchange, symbol, timeframe = series.split("|")
    page.fill("#filter", symbol)
    row = page.locator(f'#predictions tr[data-key="{series}|direction-1m"]')
    playwright_api.expect(row).to_have_count(1, timeout=FEW_SECONDS)
    seen = int(row.get_attribute("data-open-time"))
    markers, candles = (
        _number(page, "#chart", "data-markers"),
        _number(page, "#chart", "data-candles"),
    )
    page.wait_for_function(
        """([key, seen]) => Number(document.querySelector(`#predictions tr[data-key="${key}"]`)
                            ?.dataset.openTime) > seen""",
        arg=[f"{series}|direction-1m", seen],
        timeout=FEW_SECONDS,
    )
    page.wait_for_function(
        "([m]) => Number(document.querySelector('#chart').dataset.markers) > m",
        arg=[markers],
        timeout=FEW_SECONDS,
    )
    assert _number(page, "#chart", "data-candles") >= candles
    shots.take(page, "2-new-prediction")

    others = [
        v
        for v in page.eval_on_selector_all("#series-select option", "o => o.map(x => x.value)")
        if v != series
    ]
    assert others, "only one live series listed"
    page.select_option("#series-select", others[0])
    page.wait_for_function(
        """([want]) => document.querySelector('#chart').dataset.series === want
                       && Number(document.querySelector('#chart').dataset.candles) > 0""",
        arg=[others[0]],
        timeout=FEW_SECONDS,
    )
    shots.take(page, "3-other-series")

    playwright_api.expect(page.locator('#health [data-feed="synthetic-0"]')).to_have_count(
        1, timeout=FEW_SECONDS
    )
    playwright_api.expect(page.locator("#scoreboard")).to_contain_text("direction-1m")
    shots.take(page, "4-health")
    assert errors == [], errors
    context.close()


def test_a_wrong_key_shows_the_401_and_the_right_one_loads(app, browser):
    base, tmp = app
    shots = Shots(tmp / "screenshots")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors = _watch(page)
    page.goto(f"{base}/")

    playwright_api.expect(page.locator("#auth")).to_be_visible(timeout=FEW_SECONDS)
    page.fill("#api-key", "not-the-key")
    page.click("#api-key-submit")
    playwright_api.expect(page.locator("#auth-error")).to_contain_text("401", timeout=FEW_SECONDS)
    shots.take(page, "5-wrong-key")

    page.fill("#api-key", KEY)
    page.click("#api-key-submit")
    page.wait_for_function("Number(document.querySelector('#chart').dataset.candles) > 0")
    playwright_api.expect(page.locator("#auth")).to_be_hidden()
    playwright_api.expect(page.locator("#conn-state")).to_contain_text("live", timeout=FEW_SECONDS)
    assert page.evaluate("sessionStorage.getItem('tickcast.apiKey')") == KEY
    shots.take(page, "6-right-key")
    # The browser reports each refused request itself; nothing else may fail.
    assert [e for e in errors if "401" not in e] == [], errors
    context.close()
