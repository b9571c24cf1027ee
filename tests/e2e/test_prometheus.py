"""The shipped Grafana dashboard against a real Prometheus scraping a clean run.

`serve run` of a quiet synthetic market (nothing rejected, duplicated or skipped; a real
Redis for the event bus and a real Kafka broker, tansu, for the Kafka sink), Debian's
`prometheus` scraping Ray's metrics endpoints through the service-discovery file Ray
writes, then every PromQL query of configs/grafana/tickcast-dashboard.json: each must find
at least one series. A counter that exists only after its first increment leaves its panel
empty exactly when all is well.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import httpx
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.bench.browser import dashboard_config, new_port, serve_run, wait_for_predictions

DASHBOARD = PROJECT_ROOT / "configs" / "grafana" / "tickcast-dashboard.json"
SERVICE_DISCOVERY = "/tmp/ray/prom_metrics_service_discovery.json"
BUDGET_S = 150


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]


@pytest.fixture
def prometheus(tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is missing (apt-get install -y prometheus; .ci/run does)"
    port = new_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {  # JSON is YAML
                "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
                "scrape_configs": [
                    {
                        "job_name": "ray",
                        "file_sd_configs": [
                            {"files": [SERVICE_DISCOVERY], "refresh_interval": "2s"}
                        ],
                    }
                ],
            }
        )
    )
    with (tmp_path / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _series(prometheus: str, query: str) -> int:
    try:
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return 0
    return len(answer.get("data", {}).get("result", []))


def test_every_dashboard_query_finds_series_on_a_clean_run(
    tmp_path, prometheus, redis_server, kafka_broker
):
    queries = dashboard_queries()
    assert len(queries) >= 20
    port = new_port()
    sink = {
        "log_dir": str(tmp_path / "log"),
        "flush_seconds": 1.0,
        "redis_url": redis_server.url,
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "partitions": 1},
    }
    # A shadow challenger beside the champion: the comparison panel's series exist too.
    models = [{"model_type": t, "timeframe": "1m"} for t in ("direction", "return", "volatility")]
    shadow = {"model_type": "direction", "timeframe": "1m", "role": "shadow", "version": "v2"}
    config = dashboard_config(tmp_path, port, 5, sink=sink, models=[*models, shadow])
    with serve_run(config, tmp_path / "serve.log") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_for_predictions(base, proc, 180, minimum=15)
        deadline, empty = time.monotonic() + BUDGET_S, queries
        while empty and time.monotonic() < deadline:
            httpx.get(f"{base}/v1/status", timeout=10)  # Serve's HTTP metrics need requests
            empty = [q for q in empty if _series(prometheus, q) == 0]
            time.sleep(3)
        status = httpx.get(f"{base}/v1/status", timeout=10).json()
    gate = status["feeds"][0]["gate"]
    assert gate["rejected"] == gate["duplicates"] == 0  # the run was clean: zeros, not events
    assert empty == [], f"{len(empty)} of {len(queries)} dashboard queries found no series: {empty}"
