"""ONNX and native models agree on held-out rows, for every model kind; the stacked
ensemble is one graph holding its three base learners; exports are byte-reproducible."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from orchestrator.models.training.datasets import labelled_candles, model_data, pool_symbols
from orchestrator.models.training.models import (
    GradientBoosted,
    StackedDirection,
    logits,
    round_down_to_float32,
)
from orchestrator.models.training.onnx_export import (
    OUTPUTS,
    finalize,
    onnx_outputs,
    parity,
    to_onnx,
)
from orchestrator.models.training.pipeline import parity_tolerance
from tests.unit.models.helpers import MINUTE_MS, random_candles, real_candles

SMALL = dict(n_estimators=25, min_child_samples=20)


@pytest.fixture(scope="module")
def synthetic():
    tables = {
        f"S{i}": labelled_candles(random_candles(1_500, seed=20 + i), MINUTE_MS) for i in range(3)
    }
    return pool_symbols(tables, "1m", MINUTE_MS, "synthetic")


def _split(rows):
    cut = int(0.7 * len(rows.target))
    return slice(0, cut), slice(cut, None)


def _export(learner, rows):
    graph = to_onnx(learner, rows.features.shape[1])
    return finalize(graph, "test", {"model_type": rows.model_type})


@pytest.mark.parametrize("model_type", ["direction", "swing", "volatility", "return"])
def test_lightgbm_onnx_matches_native_on_held_out_rows(synthetic, model_type):
    rows = model_data(synthetic, model_type)
    train, held_out = _split(rows)
    learner = GradientBoosted(model_type, **SMALL).fit(rows.features[train], rows.target[train])
    model_bytes = _export(learner, rows)
    diff = parity(model_bytes, learner, rows.features[held_out], OUTPUTS[model_type])
    assert diff <= parity_tolerance(model_type, rows.target)
    served = onnx_outputs(model_bytes, rows.features[held_out], OUTPUTS[model_type])
    assert served.shape == (len(rows.target[held_out]), len(OUTPUTS[model_type]["columns"]))
    assert np.std(served[:, 0]) > 0  # a real model, not a constant


def test_lightgbm_parity_on_real_data(shared_data):
    candles = real_candles(shared_data, 6_000)
    data = pool_symbols({"BTC": labelled_candles(candles, MINUTE_MS)}, "1m", MINUTE_MS, "real")
    rows = model_data(data, "direction")
    train, held_out = _split(rows)
    learner = GradientBoosted("direction", **SMALL).fit(rows.features[train], rows.target[train])
    model_bytes = _export(learner, rows)
    assert parity(model_bytes, learner, rows.features[held_out], OUTPUTS["direction"]) <= 1e-5


@pytest.fixture(scope="module")
def stacked(synthetic):
    rows = model_data(synthetic, "direction")
    train, _ = _split(rows)
    learner = StackedDirection(**SMALL).fit(
        rows.features[train], rows.target[train], rows.open_time[train], rows.purge_ms
    )
    return rows, learner, _export(learner, rows)


def test_stacked_ensemble_onnx_matches_native(stacked):
    rows, learner, model_bytes = stacked
    _, held_out = _split(rows)
    assert parity(model_bytes, learner, rows.features[held_out], OUTPUTS["direction"]) <= 1e-5
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    label, proba = session.run(["label", "probabilities"], {"features": rows.features[held_out]})
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(label, proba.argmax(axis=1))


def test_stacked_ensemble_is_one_graph_with_three_base_learners(stacked):
    rows, learner, model_bytes = stacked
    model = onnx.load_from_string(model_bytes)
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    ops = {(n.name.split("/")[0], n.op_type) for n in model.graph.node}
    assert {
        ("gbt", "TreeEnsembleClassifier"),
        ("rf", "TreeEnsembleClassifier"),
        ("lr", "LinearClassifier"),
    } <= ops
    # Each base's P(up) inside the graph is that base's native prediction.
    x = rows.features[-500:]
    native = np.exp(learner.base_logits(x)) / (1 + np.exp(learner.base_logits(x)))
    for k, prefix in enumerate(("gbt", "rf", "lr")):
        probe = onnx.load_from_string(model_bytes)
        inner_output = helper.make_tensor_value_info(f"{prefix}/p_up", onnx.TensorProto.FLOAT, None)
        probe.graph.output.append(inner_output)
        inner = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        got = inner.run([f"{prefix}/p_up"], {"features": x})[0][:, 0]
        np.testing.assert_allclose(got, native[:, k], atol=1e-5)
    assert learner.meta.coef_.shape == (1, 3)


def test_exports_are_byte_reproducible(synthetic):
    rows = model_data(synthetic, "direction")
    train, _ = _split(rows)

    def build(learner):
        return _export(
            learner.fit(
                rows.features[train], rows.target[train], rows.open_time[train], rows.purge_ms
            ),
            rows,
        )

    first, again = GradientBoosted("direction", **SMALL), GradientBoosted("direction", **SMALL)
    assert build(first) == build(again)
    assert build(StackedDirection(**SMALL)) == build(StackedDirection(**SMALL))


def test_finalize_does_not_depend_on_the_converters_opset_order(synthetic):
    rows = model_data(synthetic, "return")
    learner = GradientBoosted("return", **SMALL).fit(rows.features, rows.target)
    graph = to_onnx(learner, 27)
    swapped = onnx.ModelProto()
    swapped.CopyFrom(graph)
    reversed_opsets = list(reversed(graph.opset_import))
    del swapped.opset_import[:]
    swapped.opset_import.extend(reversed_opsets)
    assert list(swapped.opset_import) != list(graph.opset_import)
    assert finalize(graph, "g", {}) == finalize(swapped, "g", {})


def test_metadata_and_graph_name_are_written(synthetic):
    rows = model_data(synthetic, "return")
    learner = GradientBoosted("return", **SMALL).fit(rows.features, rows.target)
    meta = {"model_type": "return", "feature_names": list(rows.feature_names), "n": 3}
    model = onnx.load_from_string(finalize(to_onnx(learner, 27), "return-1m-v1", meta))
    props = {p.key: p.value for p in model.metadata_props}
    assert model.graph.name == "return-1m-v1"
    assert json.loads(props["feature_names"]) == list(rows.feature_names)
    assert props["model_type"] == "return" and json.loads(props["n"]) == 3


def test_round_down_to_float32_keeps_every_float32_decision():
    rng = np.random.default_rng(5)
    thresholds = rng.normal(0, 1, 2_000) * 10.0 ** rng.integers(-6, 3, 2_000)
    rounded = round_down_to_float32(thresholds)
    assert np.all(rounded <= thresholds)
    np.testing.assert_array_equal(rounded, rounded.astype(np.float32))
    nearest = thresholds.astype(np.float32)
    for toward in (None, -np.inf, np.inf):  # each threshold's float32 and its neighbours
        x = nearest if toward is None else np.nextafter(nearest, np.float32(toward))
        x = x.astype(np.float64)
        np.testing.assert_array_equal(x <= thresholds, x <= rounded)


def test_logits_are_finite_at_certain_probabilities():
    assert np.isfinite(logits(np.array([0.0, 0.5, 1.0]))).all()
