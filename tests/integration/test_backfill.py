"""The backfill job through Ray Data on a real slice: the same rows as in-process, an
idempotent rerun, and the completion record on the event bus."""

from __future__ import annotations

import json

import pyarrow.compute as pc

from orchestrator.batch.backfill.job import run_backfill
from orchestrator.cli import backfill as cli
from orchestrator.sinks.parquet_log import read_log
from orchestrator.sinks.redis_bus import RECORD_STREAM, RedisStreamBus


def _argv(shared_data, out, *extra: str) -> list[str]:
    return [
        "--data",
        str(shared_data / "binance-spot-1m"),
        "--data",
        f"binanceusdm={shared_data / 'binance-usdm-1m'}",
        "--symbols",
        "BTC/USDT,LINK/USDT",
        "--timeframes",
        "5m,1h",
        "--models",
        "direction@all,volatility",
        "--out",
        str(out),
        "--num-actors",
        "2",
        "--actor-cpus",
        "0.25",
        "--feature-cpus",
        "0.25",
        "--batch-size",
        "4096",
        "--no-progress",
        *extra,
    ]


def _rows(root):
    return read_log(root).drop_columns(["predicted_at"]).sort_by("event_id")


def test_ray_data_backfill_is_idempotent_and_announced(
    ray_cluster, shared_data, tmp_path, redis_server
):
    out = tmp_path / "ray"
    record = cli.main(_argv(shared_data, out, "--redis-url", redis_server.url))
    first = _rows(out / "predictions")
    counts = record["counts"]
    assert record["executor"] == "ray" and counts["predictions"] == first.num_rows > 0
    assert set(first.column("exchange").to_pylist()) == {"binance", "binanceusdm"}
    assert set(first.column("timeframe").to_pylist()) == {"5m", "1h"}
    assert set(first.column("model_id").to_pylist()) == {
        f"{t}-{tf}" for t in ("direction", "volatility") for tf in ("5m", "1h")
    }

    bus = RedisStreamBus(redis_server.url)
    ((entry_id, fields),) = bus.read(stream=RECORD_STREAM)
    assert fields["kind"] == "backfill_complete"
    assert json.loads(fields["data"]) == record

    again = cli.main(_argv(shared_data, out, "--no-report"))
    second = _rows(out / "predictions")
    assert second.equals(first)  # replaced, not duplicated
    assert pc.count_distinct(second.column("event_id")).as_py() == second.num_rows
    assert again["counts"]["rows_replaced"] == first.num_rows
    assert read_log(out / "outcomes").num_rows == again["counts"]["outcomes"]

    local = cli.options_from(
        cli.parse_args(_argv(shared_data, tmp_path / "local", "--executor", "local", "--no-report"))
    )
    run_backfill(local, say=lambda _: None)
    assert _rows(tmp_path / "local" / "predictions").equals(first)  # same rows either way
