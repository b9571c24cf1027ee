"""Champion and challenger in a running application: a shadow is logged and scored but never
published; a canary at 20% publishes for its symbols only; the scoreboard compares them."""

from __future__ import annotations

import httpx
import pyarrow.compute as pc
import ray

from orchestrator.sinks.parquet_log import read_log
from orchestrator.sinks.redis_bus import RedisStreamBus, decode_prediction
from orchestrator.stream.outcomes import OUTCOME_SCHEMA
from orchestrator.stream.routing import canary_share
from serve_app.app import build_app
from tests.integration.polling import until

N_SYMBOLS, MINUTES = 40, 480


def _rows(table, model_id: str, **equal) -> list[dict]:
    mask = pc.equal(table.column("model_id"), model_id)
    for column, value in equal.items():
        mask = pc.and_(mask, pc.equal(table.column(column), value))
    return table.filter(mask).to_pylist()


def test_a_shadow_is_scored_but_never_published_and_a_canary_takes_its_share(
    serve_app, tmp_path, redis_server
):
    args = {
        "feeds": [
            {
                "kind": "synthetic",
                "n_symbols": N_SYMBOLS,
                "speed": 0,
                "max_minutes": MINUTES,
                "seed": 5,
            }
        ],
        "features": {"shards": 2, "num_cpus": 0.1, "timeframes": ["1m", "5m"]},
        "serving": {"num_cpus": 0.1},
        "models": [
            {"model_type": "direction", "timeframe": "1m"},
            {"model_type": "direction", "timeframe": "1m", "role": "shadow", "version": "v2"},
            {"model_type": "direction", "timeframe": "5m"},
            {
                "model_type": "direction",
                "timeframe": "5m",
                "role": "canary",
                "version": "v2",
                "canary_fraction": 0.2,
            },
        ],
        "sink": {
            "log_dir": str(tmp_path / "log"),
            "flush_rows": 500,
            "redis_url": redis_server.url,
        },
        "stream": {"state_dir": str(tmp_path / "state")},
    }
    serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")

    def finished() -> bool:
        return all(f["done"] for f in pipeline.status.remote().result()["feeds"])

    until(finished, "the replay's end", timeout_s=300)
    pipeline.flush.remote().result()
    status = pipeline.status.remote().result()
    assert all(s["model_errors"] == 0 for s in status["shards"])
    log = read_log(tmp_path / "log")
    assert len(set(log.column("event_id").to_pylist())) == log.num_rows

    # The shadow predicted every row its champion did, and none of it was published.
    champion_1m = _rows(log, "direction-1m", role="production")
    shadow = _rows(log, "direction-1m", role="shadow")
    assert champion_1m and len(shadow) == len(champion_1m)
    assert {r["model_version"] for r in shadow} == {"v2"}
    assert {r["model_version"] for r in champion_1m} == {"v1"}
    assert not any(r["published"] for r in shadow) and all(r["published"] for r in champion_1m)
    keys = {(r["symbol"], r["open_time"]) for r in champion_1m}
    assert {(r["symbol"], r["open_time"]) for r in shadow} == keys

    # The canary: exactly one published direction-5m row per candle, the canary's for the
    # symbols its hash puts below 20%, the champion's for the others; both logged for all.
    symbols = {r["symbol"] for r in champion_1m}
    canary = {s for s in symbols if canary_share("direction-5m", "synthetic", s) < 0.2}
    assert 0 < len(canary) < N_SYMBOLS
    five = _rows(log, "direction-5m")
    assert five
    published = [r for r in five if r["published"]]
    by_candle = {(r["symbol"], r["open_time"]) for r in published}
    assert len(by_candle) == len(published) == len(five) // 2
    for row in published:
        expected = ("canary", "v2") if row["symbol"] in canary else ("production", "v1")
        assert (row["role"], row["model_version"]) == expected, row["symbol"]

    # Published means the signal: the latest store, the stream and Redis hold only those.
    latest = pipeline.latest.remote().result()
    assert {(r["model_id"], r["model_version"], r["symbol"] in canary) for r in latest} <= {
        ("direction-1m", "v1", True),
        ("direction-1m", "v1", False),
        ("direction-5m", "v2", True),
        ("direction-5m", "v1", False),
    }
    entries = RedisStreamBus(redis_server.url).read(count=100_000)
    on_bus = [decode_prediction(fields) for _, fields in entries]
    assert len(on_bus) == sum(1 for r in log.to_pylist() if r["published"])
    assert all(r["role"] != "shadow" and r["published"] for r in on_bus)
    sink = status["sink"]
    assert sink["unpublished"] == log.num_rows - len(on_bus)

    # Scored, both roles, and compared on the same candles.
    outcomes = read_log(tmp_path / "log-outcomes", OUTCOME_SCHEMA)
    assert set(pc.unique(outcomes.column("role")).to_pylist()) == {"production", "shadow", "canary"}
    board = httpx.get(f"{ray.tickcast_http}/v1/scoreboard", timeout=30).json()
    rows = {(m["model_id"], m["role"]): m for m in board["models"]}
    for model_id, role in (("direction-1m", "shadow"), ("direction-5m", "canary")):
        challenger = rows[(model_id, role)]
        assert challenger["version"] == "v2" and challenger["scored"] > 0
        comparison = challenger["comparison"]
        assert comparison["champion_version"] == "v1" and comparison["pairs"] > 0
        assert comparison["pairs"] == rows[(model_id, "production")]["scored"]
