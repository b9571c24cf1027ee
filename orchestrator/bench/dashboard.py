"""The dashboard in a real browser: page weight, time to the first chart, and the browser's
memory with N symbols in the table (default 500), each beside a baseline from the same run.

* weight: bytes the page's first load transfers (its files, the vendored chart library,
  the API answers it asks for), beside the API answers alone (what a script would read);
* time: from navigation to a drawn chart, beside a plain HTTP client fetching the same
  data (latest predictions + the chosen series' candles) once the server is warm;
* memory: the page's JS heap and the renderer's PSS after the table holds every symbol,
  beside a blank page in the same browser.

    tickcast bench dashboard [--symbols 500] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx

from orchestrator.bench.browser import (
    dashboard_config,
    launch_chromium,
    new_port,
    serve_run,
    wait_for_predictions,
)
from orchestrator.bench.harness import (
    add_smoke_flag,
    apply_smoke,
    print_header,
    print_table,
)

CHART_DRAWN = "Number(document.querySelector('#chart').dataset.candles) > 0"


def renderer_pss_kb() -> int:
    """PSS of this process's chromium renderers (one per open page), in kB."""
    total = 0
    for pid in _descendants(os.getpid()):
        try:
            if b"--type=renderer" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
    return total


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def measure_page(browser, base: str, n_symbols: int) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sizes = {"files": 0, "api": 0}

    def counted(response) -> None:
        try:
            size = len(response.body())
        except Exception:  # noqa: BLE001 - a WebSocket upgrade or an aborted request
            return
        sizes["api" if "/v1/" in response.url else "files"] += size

    page.on("response", counted)
    started = time.perf_counter()
    page.goto(f"{base}/")
    page.wait_for_function(CHART_DRAWN, timeout=60_000)
    first_chart_s = time.perf_counter() - started
    page.wait_for_function(
        "([n]) => document.querySelector('#predictions').dataset.rows >= n",
        arg=[n_symbols],
        timeout=60_000,
    )
    page.wait_for_timeout(2000)  # a few live updates in
    heap, pss = js_heap_bytes(page), renderer_pss_kb()
    series = page.get_attribute("#chart", "data-series")
    page.close()
    return {**sizes, "first_chart_s": first_chart_s, "heap": heap, "pss": pss, "series": series}


def js_heap_bytes(page) -> int:
    """The page's live JS heap after a garbage collection, through the DevTools protocol
    (``performance.memory`` is rounded to coarse buckets)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("HeapProfiler.collectGarbage")
    cdp.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return int(metrics["JSHeapUsedSize"])


def blank_page(browser) -> tuple[int, int]:
    """(JS heap bytes, renderer PSS kB) of a blank page, the only page open."""
    page = browser.new_page()
    page.goto("about:blank")
    heap, pss = js_heap_bytes(page), renderer_pss_kb()
    page.close()
    return heap, pss


def plain_client(base: str, series: str) -> tuple[float, int]:
    exchange, symbol, timeframe = series.split("|")
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=30) as client:
        latest = client.get("/v1/predictions/latest").content
        candles = client.get(
            "/v1/candles",
            params={"exchange": exchange, "symbol": symbol, "timeframe": timeframe, "limit": 300},
        ).content
    return time.perf_counter() - started, len(latest) + len(candles)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=500)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    apply_smoke(parser, args, symbols=15)
    print_header("dashboard", f"{args.symbols} synthetic symbols, 3 models on 1m", smoke=args.smoke)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        tmp, port = Path(folder), new_port()
        base = f"http://127.0.0.1:{port}"
        with serve_run(dashboard_config(tmp, port, args.symbols), tmp / "serve.log") as proc:
            wait_for_predictions(base, proc, 240, minimum=args.symbols * 3)
            with sync_playwright() as p:
                browser = launch_chromium(p)
                blank_heap, blank_pss = blank_page(browser)
                page = measure_page(browser, base, args.symbols)
                plain_s, plain_bytes = plain_client(base, page["series"])
                browser.close()
    print_table(
        ("what", "dashboard", "baseline", "baseline is"),
        [
            (
                "first load, bytes",
                page["files"] + page["api"],
                plain_bytes,
                "the same API answers read by a script",
            ),
            ("  of which page files", page["files"], None, ""),
            ("  of which API answers", page["api"], None, ""),
            (
                "navigation to first chart, ms",
                round(page["first_chart_s"] * 1000),
                round(plain_s * 1000),
                "a plain HTTP client fetching the same data",
            ),
            (
                f"JS heap with {args.symbols} symbols, kB",
                page["heap"] // 1024,
                blank_heap // 1024,
                "a blank page in the same browser",
            ),
            (
                f"renderer PSS with {args.symbols} symbols, kB",
                page["pss"],
                blank_pss,
                "a blank page in the same browser",
            ),
        ],
    )
    return 0
