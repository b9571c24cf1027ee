"""Through Serve's HTTP proxy: concurrent predicts (JSON and Arrow bodies) share ingress ->
model calls, and each still gets exactly the model's answer for its own rows."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from orchestrator import PROJECT_ROOT
from orchestrator.features import FEATURE_NAMES
from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import Registry
from serve_app.app import build_app

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def _predictor() -> OnnxPredictor:
    registry = Registry(PROJECT_ROOT / "models_onnx")
    manifest = registry.resolve("direction", "1m")
    return OnnxPredictor(manifest, registry.load_bytes(manifest))


def _arrow(names: list[str], rows: np.ndarray) -> bytes:
    table = pa.table({name: rows[:, i] for i, name in enumerate(names)})
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


async def _post_all(url: str, names: list[str], parts: list[np.ndarray]) -> list[list[float]]:
    async with httpx.AsyncClient(timeout=60) as client:

        async def post(i: int, rows: np.ndarray) -> list[float]:
            if i % 2:
                answer = await client.post(
                    url,
                    params={"model_type": "direction", "timeframe": "1m"},
                    content=_arrow(names, rows),
                    headers={"content-type": ARROW_STREAM},
                )
            else:
                answer = await client.post(
                    url, json={"model_type": "direction", "timeframe": "1m", "rows": rows.tolist()}
                )
            assert answer.status_code == 200, answer.text
            return [p["prob_up"] for p in answer.json()["predictions"]]

        return await asyncio.gather(*(post(i, rows) for i, rows in enumerate(parts)))


def test_concurrent_predicts_share_model_calls_and_each_gets_its_own_rows(
    serve_app, ray_cluster, tmp_path
):
    args = {
        "feeds": [],
        "models": [{"model_type": "direction", "timeframe": "1m"}],
        # A wide window, so that merging does not depend on how busy the machine is.
        "serving": {"num_cpus": 0.1, "coalesce_window_s": 0.05, "coalesce_max_rows": 64},
        "stream": {"state_dir": str(tmp_path / "state")},
        "sink": {"log_dir": str(tmp_path / "log")},
        "api": {"rate_limit_per_s": 1e6, "rate_limit_burst": 10**6},
    }
    serve_app.run(build_app(args), name="tickcast", route_prefix="/")
    predictor = _predictor()
    names = list(predictor.manifest.feature_names)
    rng = np.random.default_rng(5)
    parts = [
        np.round(rng.normal(size=(n, len(names))), 6).astype(np.float32)
        for n in rng.integers(1, 20, size=40)
    ]
    answers = asyncio.run(_post_all(f"{ray_cluster.tickcast_http}/v1/predict", names, parts))

    for rows, answer in zip(parts, answers, strict=True):
        full = np.full((len(rows), len(FEATURE_NAMES)), np.nan)
        full[:, [FEATURE_NAMES.index(n) for n in names]] = rows
        np.testing.assert_allclose(answer, predictor.predict(full)[:, 0], rtol=1e-6)
    merged = httpx.get(f"{ray_cluster.tickcast_http}/v1/status", timeout=60).json()["ingress"]
    assert merged["http_predicts"] == len(parts)
    assert merged["model_calls"] < len(parts)
