"""Symbols added to and removed from a running replay feed, as an operator would: through
the admin endpoint, then a crash of the feed, then a redeploy with another symbol list.

Added symbols warm up on their history and are predicted from the next live minute on,
with features equal to the batch twin's on the same history; removed ones stop at one
minute, leave /v1/predictions/latest and the checkpoints; no other symbol misses a tick.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray

from orchestrator.features import FEATURE_NAMES, compute_features
from orchestrator.market.timeframes import MINUTE_MS
from orchestrator.sinks.parquet_log import read_log
from orchestrator.stream.checkpoint import load_checkpoint
from serve_app.app import build_app
from tests.fakes.replay_files import write_replay_folder
from tests.integration.conftest import ADMIN_KEY

WARMUP, LIVE = 60, 240  # minutes
FIRST, ADDED = 20, 50  # symbols at start, symbols added
ADMIN = {"X-Admin-Key": ADMIN_KEY}


def _args(tmp_path: Path, symbols: list[str]) -> dict:
    return {
        "feeds": [
            {
                "kind": "replay",
                "exchange": "replayx",
                "path": str(tmp_path / "replay"),
                "symbols": symbols,
                "speed": 4,
                "warmup_minutes": WARMUP,
                "max_minutes": LIVE,
            }
        ],
        "features": {"shards": 2, "num_cpus": 0.1, "log_features": True},
        "stream": {"checkpoint_every": 20, "state_dir": str(tmp_path / "state")},
        "serving": {"num_cpus": 0.1},
        "sink": {"log_dir": str(tmp_path / "predictions"), "flush_rows": 500},
    }


def _wait(predicate, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    pytest.fail("condition not reached in time")


def _feed(pipeline) -> dict:
    return pipeline.status.remote().result()["feeds"][0]


def _minutes_emitted(pipeline) -> int:
    return _feed(pipeline)["source"].get("minutes_emitted", 0)


def _by_symbol(table) -> dict[str, list[int]]:
    times = defaultdict(list)
    for symbol, open_time in zip(
        table["symbol"].to_pylist(), table["open_time"].to_pylist(), strict=True
    ):
        times[symbol].append(open_time)
    return {s: sorted(t) for s, t in times.items()}


def _contiguous(times: list[int]) -> bool:
    return len(times) == len(set(times)) and np.all(np.diff(times) == MINUTE_MS)


def test_add_50_then_remove_20_symbols_while_running(serve_app, ray_cluster, tmp_path):
    frames = write_replay_folder(tmp_path / "replay", FIRST + ADDED, WARMUP + LIVE + 30)
    symbols = list(frames)
    first, added = symbols[:FIRST], symbols[FIRST:]
    removed = first[:10] + added[:10]
    untouched, kept_added = first[10:], added[10:]
    serve_app.run(build_app(_args(tmp_path, first)), name="tickcast", route_prefix="/")
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")
    url = f"{ray_cluster.tickcast_http}/v1/admin/feeds/replay-0/symbols"

    _wait(lambda: _minutes_emitted(pipeline) >= WARMUP + 20)
    with httpx.Client(timeout=60) as client:
        answer = client.post(url, json={"symbols": added + first[:2]}, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        change = answer.json()
        assert change["added"] == added and change["unchanged"] == first[:2]
        assert change["warmup_candles"] == ADDED * WARMUP and change["symbols"] == FIRST + ADDED
        first_live = change["warmup_from"] + WARMUP * MINUTE_MS
        unknown = client.post(url, json={"symbols": ["NOPE/USDT"]}, headers=ADMIN)
        assert unknown.status_code == 422 and "NOPE/USDT" in unknown.text

        _wait(lambda: _minutes_emitted(pipeline) >= WARMUP + 80)
        answer = client.request("DELETE", url, json={"symbols": removed}, headers=ADMIN)
        assert answer.status_code == 200 and answer.json()["removed"] == removed, answer.text
        latest = client.get(f"{ray_cluster.tickcast_http}/v1/predictions/latest").json()
        assert not {r["symbol"] for r in latest["predictions"]} & set(removed)

        # A crash after the change: the restarted feed resumes the new set from its checkpoint.
        _wait(lambda: _minutes_emitted(pipeline) >= WARMUP + 140)
        feed = pipeline.actors.remote().result()["feeds"][0]
        ray.kill(feed, no_restart=False)
        _wait(lambda: _feed(pipeline).get("epoch", 0) >= 1, timeout_s=60)
        expected_now = sorted(untouched + kept_added)
        assert sorted(client.get(url, headers=ADMIN).json()["symbols"]) == expected_now

    _wait(lambda: _feed(pipeline)["done"], timeout_s=240)
    pipeline.flush.remote().result()
    status = pipeline.status.remote().result()
    assert sum(s["symbols"] for s in status["shards"]) == len(expected_now)
    for path in (tmp_path / "state" / "local").glob("shard-*.pkl"):  # dropped from checkpoints
        keys = load_checkpoint(path)["state"]["keys"]
        assert not {k.split(":", 1)[1] for k in keys} & set(removed)

    predicted = _by_symbol(read_log(tmp_path / "predictions"))
    last_minute = max(max(t) for t in predicted.values())
    for symbol in untouched:  # not one tick missed across the add, the removal and the crash
        assert _contiguous(predicted[symbol]) and predicted[symbol][-1] == last_minute, symbol
    stops = {predicted[s][-1] for s in removed}
    assert len(stops) == 1 and stops.pop() < last_minute - 30 * MINUTE_MS  # all at one minute

    features = read_log(tmp_path / "predictions-features")
    for symbol in kept_added:
        times = predicted[symbol]
        assert _contiguous(times) and times[-1] == last_minute, symbol
        assert first_live <= times[0] <= first_live + 2 * WARMUP // 10 * MINUTE_MS, symbol
        # Predicted from the first minute after the warm-up (its history, then the live
        # candles that came while it was sent); features equal the batch twin's from the same
        # first candle on (a cold start), to the last bit.
        frame = frames[symbol]
        history = frame[frame.open_time >= change["warmup_from"]].reset_index(drop=True)
        twin = compute_features(history).set_index(history.open_time)
        rows = features.filter(np.array(features["symbol"].to_pylist()) == symbol)
        logged = {t: i for i, t in enumerate(rows["open_time"].to_pylist())}
        assert sorted(logged) == times
        values = np.column_stack([rows[name].to_numpy() for name in FEATURE_NAMES])
        expected = twin.loc[times, list(FEATURE_NAMES)].to_numpy()
        np.testing.assert_array_equal(values[[logged[t] for t in times]], expected, symbol)


def _deploy(args: dict, pipeline_symbols: list | None = None) -> None:
    """``serve deploy`` of one application, as the CLI sends it (the declarative path): the
    Pipeline's symbol lists in its ``user_config`` override, when given."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    app = {"name": "tickcast", "route_prefix": "/", "import_path": "serve_app.app:build_app"}
    app["args"] = args
    if pipeline_symbols is not None:
        app["deployments"] = [{"name": "Pipeline", "user_config": {"symbols": pipeline_symbols}}]
    _get_global_client().deploy_apps(ServeDeploySchema(applications=[app]), _blocking=True)


def test_redeploys_change_symbol_lists_in_place_or_through_a_restart(serve_app, tmp_path):
    frames = write_replay_folder(tmp_path / "replay", 8, WARMUP + LIVE)
    symbols = list(frames)
    args = _args(tmp_path, symbols[:4])
    _deploy(args, [symbols[:4]])
    pipeline = serve_app.get_deployment_handle("Pipeline", app_name="tickcast")
    _wait(lambda: _minutes_emitted(pipeline) >= WARMUP + 10)
    before = pipeline.pid.remote().result()

    # Only the Pipeline's user_config changes: a lightweight update, reconfigured in place.
    _deploy(args, [symbols[2:]])
    feed = pipeline.actors.remote().result()["feeds"][0]
    _wait(lambda: sorted(ray.get(feed.symbols.remote())) == symbols[2:], timeout_s=60)
    assert pipeline.pid.remote().result() == before  # the same replica
    status = _feed(pipeline)
    assert status["epoch"] == 0  # the same feed actor: nothing restarted
    assert status["symbols_added"] == 4 and status["symbols_removed"] == 2

    # Changed args change the application's code version: Serve replaces every replica; the
    # new feed resumes its checkpoint and runs the list the new config names.
    args["feeds"][0]["symbols"] = symbols[:3]
    _deploy(args)
    _wait(lambda: pipeline.pid.remote().result() != before, timeout_s=60)
    feed = pipeline.actors.remote().result()["feeds"][0]
    _wait(lambda: sorted(ray.get(feed.symbols.remote())) == symbols[:3], timeout_s=60)
    assert _feed(pipeline)["epoch"] >= 1  # resumed from its checkpoint
