"""A four-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and three
workers, each its own raylet), the pipeline replaying real candles with its actors spread
over the workers, and one worker node removed mid-replay: the one hosting a feature shard,
or the one hosting the sink. State, log and models live under ``--store``: a folder, or an
object-store prefix such as ``s3://bucket/mn`` (the endpoint and keys from the environment,
``AWS_ENDPOINT_URL`` etc.), as on a real cluster whose nodes share no disk; the models are
uploaded there from ``models_onnx/`` first, as ``aws s3 sync`` would. Run in its own process
(it starts its own Ray):

    python -m tests.e2e.multi_node --data ../shared/data --store /tmp/mn --remove shard

Prints one JSON object: where each actor ran, each process's memory (PSS) and CPU time at
the removal, how long the pipeline took to predict again after it, and the prediction
log's duplicates and gaps (``tests/e2e/test_multi_node.py`` asserts on them).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import ray
from ray import serve
from ray.cluster_utils import Cluster

from orchestrator import PROJECT_ROOT
from orchestrator.bench.harness import cpu_seconds
from orchestrator.bench.stack import memory_kb
from orchestrator.sinks.parquet_log import read_log
from orchestrator.storage import locate
from serve_app.app import build_app

MINUTES, REMOVE_AT = 900, 420
ON_WORKERS = {"resources": {"worker": 0.01}}
FOLDERS = (("binance", "binance-spot-1m"), ("binance-usdm", "binance-usdm-1m"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVED = "direction-1m"  # the default config's one model


def upload_models(store: str) -> str:
    """The served model's folder of ``models_onnx/`` copied under ``store`` as it is (stages
    included); returns the registry location."""
    target = locate(store) / "models"
    source = PROJECT_ROOT / "models_onnx"
    for path in sorted((source / SERVED).rglob("*")):
        if path.is_file():
            (target / path.relative_to(source).as_posix()).write_bytes(path.read_bytes())
    return target.uri


def app_args(data: Path, store: str) -> dict:
    feeds = [
        {
            "kind": "replay",
            "exchange": exchange,
            "path": str(data / folder),
            "speed": 20,
            "max_minutes": MINUTES,
            **({"symbols": ["LINK/USDT", "DOT/USDT"]} if exchange == "binance-usdm" else {}),
        }
        for exchange, folder in (
            ("binance", "binance-spot-1m"),
            ("binance-usdm", "binance-usdm-1m"),
        )
    ]
    return {
        "environment": "multi-node",
        "feeds": feeds,
        "features": {"shards": 3, "num_cpus": 0.1},
        "models_dir": f"{store}/models",
        "stream": {"checkpoint_every": 30, "state_dir": f"{store}/state"},
        "serving": {"num_cpus": 0.1, **ON_WORKERS},
        "sink": {"log_dir": f"{store}/log", "flush_rows": 100, "flush_seconds": 0.5},
        # the supervisor on the head (it owns the actors); everything else on the workers
        "placement": {
            "pipeline": {"resources": {"head": 0.01}},
            "feeds": {"strategy": "SPREAD", **ON_WORKERS},
            "shards": {"strategy": "SPREAD", **ON_WORKERS},
            "sink": ON_WORKERS,
        },
    }


def _status(pipeline) -> dict | None:
    try:
        return pipeline.status.remote().result(timeout_s=15)
    except Exception:  # noqa: BLE001 - a restarting actor answers again a moment later
        return None


def _wait(pipeline, done, what: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _status(pipeline)
        if status is not None and done(status):
            return status
        time.sleep(0.3)
    raise TimeoutError(f"timed out waiting for {what}")


def _emitted(status: dict) -> int:
    return min(f["source"].get("minutes_emitted", 0) for f in status["feeds"])


def _raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def _parent(pid: int) -> int:
    """A worker process's parent: the raylet of the node it runs on."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _process(pid: int) -> dict:
    return {"pss_mib": round(memory_kb(pid)[1] / 1024, 1), "cpu_s": round(cpu_seconds(pid), 1)}


def run(data: Path, store: str, remove: str) -> dict:
    upload_models(store)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"head": 1}, "include_dashboard": False},
    )
    workers = [cluster.add_node(num_cpus=1, resources={"worker": 1}) for _ in range(3)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": _port()}, proxy_location="HeadOnly")
        serve.run(build_app(app_args(data, store)), name="tickcast", route_prefix="/")
        pipeline = serve.get_deployment_handle("Pipeline", app_name="tickcast")
        _wait(pipeline, lambda s: _emitted(s) >= REMOVE_AT, "the removal's minute")
        actors = pipeline.actors.remote().result(timeout_s=30)
        named = {
            **{f"feed-{i}": a for i, a in enumerate(actors["feeds"])},
            **{f"shard-{i}": a for i, a in enumerate(actors["shards"])},
            "sink": actors["sink"],
        }
        raylets = {_raylet_pid(n): n.node_id for n in [cluster.head_node, *workers]}
        placed = {}
        for name, actor in named.items():
            pid = ray.get(actor.pid.remote())
            placed[name] = {"node": raylets.get(_parent(pid), "?"), **_process(pid)}
        for name, deployment in (("pipeline", "Pipeline"), ("model", "model-direction-1m")):
            pid = serve.get_deployment_handle(deployment, "tickcast").pid.remote().result()
            placed[name] = {"node": raylets.get(_parent(pid), "?"), **_process(pid)}
        ray_own: dict[str, float] = {}  # Ray's own processes, all nodes: PSS MiB per kind
        for each in [cluster.head_node, *workers]:
            for kind, procs in each.all_processes.items():
                kib = sum(memory_kb(p.process.pid)[1] for p in procs)
                ray_own[kind] = round(ray_own.get(kind, 0.0) + kib / 1024, 1)
        victim_node = placed["shard-0" if remove == "shard" else "sink"]["node"]
        node = next(n for n in workers if n.node_id == victim_node)
        before = _status(pipeline) or {}
        predicted = sum(s.get("rows_predicted", 0) for s in before.get("shards", []))
        removed_at = time.monotonic()
        cluster.remove_node(node, allow_graceful=False)
        lost = sorted(name for name, p in placed.items() if p["node"] == victim_node)

        def recovered(status: dict) -> bool:
            shards = status["shards"]
            answering = all("rows_predicted" in s for s in shards) and "written" in status["sink"]
            return answering and sum(s["rows_predicted"] for s in shards) > predicted + 100

        _wait(pipeline, recovered, "predictions after the removal")
        recovery_s = time.monotonic() - removed_at
        _wait(pipeline, lambda s: all(f.get("done") for f in s["feeds"]), "the replay's end")
        pipeline.flush.remote().result(timeout_s=60)
        return {
            "removed": remove,
            "actors_lost": lost,
            "nodes_used": len({p["node"] for p in placed.values()}),
            "processes": placed,
            "ray_processes_pss_mib": ray_own,
            "recovery_s": round(recovery_s, 1),
            "store": store,
            "models_dir": serve.get_deployment_handle("model-direction-1m", "tickcast")
            .describe.remote()
            .result()["registry"],
            **_audit(f"{store}/log"),
        }
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def _audit(log_dir: str) -> dict:
    """Duplicated event ids, and gaps: per series, minutes missing between its first and
    last prediction."""
    log = read_log(log_dir)
    ids = log.column("event_id").to_pylist()
    scored = read_log(locate(log_dir).sibling("outcomes")).column("event_id").to_pylist()
    gaps, per_series, unscored = {}, {}, 0
    scored_ids = set(scored)
    for exchange in pc.unique(log.column("exchange")).to_pylist():
        mine = log.filter(pc.equal(log.column("exchange"), exchange))
        for symbol in pc.unique(mine.column("symbol")).to_pylist():
            times = mine.filter(pc.equal(mine.column("symbol"), symbol))["open_time"]
            first, last = pc.min(times).as_py(), pc.max(times).as_py()
            per_series[f"{exchange} {symbol}"] = len(times)
            series = mine.filter(pc.equal(mine.column("symbol"), symbol))
            settled = series.filter(pc.less(series.column("open_time"), pc.max(times)))
            unscored += sum(e not in scored_ids for e in settled.column("event_id").to_pylist())
            missing = (last - first) // 60_000 + 1 - len(times)
            if missing:
                gaps[f"{exchange} {symbol}"] = missing
    return {
        "rows": len(ids),
        "duplicates": len(ids) - len(set(ids)),
        "outcomes": len(scored),
        "outcome_duplicates": len(scored) - len(set(scored)),
        # predictions whose next candle closed in the replay but that have no outcome
        "unscored": unscored,
        "per_series": per_series,
        "gaps": gaps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--store", required=True, help="a folder or an s3:// prefix")
    parser.add_argument("--remove", choices=("shard", "sink"), default="shard")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.data, args.store, args.remove)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
