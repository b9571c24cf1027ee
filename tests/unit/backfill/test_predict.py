"""BatchPredictor: live prediction rows from feature rows; outcomes as live scoring makes them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.batch.backfill.features import feature_matrix, feature_rows, split_series
from orchestrator.batch.backfill.models import ModelSpec, select_models
from orchestrator.batch.backfill.predict import (
    PREDICTED_SCHEMA,
    BatchPredictor,
    evaluation_of,
    outcomes_of,
    predictions_of,
)
from orchestrator.batch.backfill.sources import target_candles
from orchestrator.features import FEATURE_NAMES
from orchestrator.models.compiled import TOLERANCE
from orchestrator.models.predictor import OnnxPredictor
from orchestrator.models.registry import Registry, RegistryError
from orchestrator.stream.events import PREDICTION_SCHEMA, ModelOutput, TickRows, event_ids
from orchestrator.stream.outcomes import OUTCOME_SCHEMA, OutcomeTracker
from orchestrator.stream.signals import direction_signals, trend_labels
from tests.unit.backfill.helpers import real_candles

MODELS_DIR = PROJECT_ROOT / "models_onnx"
NOW_MS = 1_800_000_000_000


@pytest.fixture(scope="module")
def rows_1m_5m(shared_data) -> pa.Table:
    candles = real_candles(shared_data, ("BTC/USDT", "SOL/USDT"), 400)
    parts = [t for s in split_series(candles) for t in target_candles(s, ("1m", "5m")).values()]
    return feature_rows(pa.concat_tables(parts))


@pytest.fixture(scope="module")
def models():
    specs = (
        ModelSpec("direction", "all"),
        ModelSpec("volatility"),
        ModelSpec("swing"),
        ModelSpec("return"),
    )
    return select_models(MODELS_DIR, specs, ("1m", "5m"))[0]


@pytest.mark.parametrize("engine", ["onnx", "auto"])
def test_every_row_gets_every_model_of_its_timeframe_built_like_live(rows_1m_5m, models, engine):
    """ONNX Runtime's answers exactly, or compiled trees' within ``TOLERANCE`` of them."""
    predicted = BatchPredictor(models, 0.6, 0.7, NOW_MS, engine=engine)(rows_1m_5m)
    assert predicted.schema == PREDICTED_SCHEMA
    per_tf = {tf: sum(m.manifest.timeframe == tf for m in models) for tf in ("1m", "5m")}
    n_tf = {tf: pc.sum(pc.equal(rows_1m_5m.column("timeframe"), tf)).as_py() for tf in per_tf}
    assert predicted.num_rows == sum(per_tf[tf] * n_tf[tf] for tf in per_tf)
    for model in models:
        _check_model(predicted, rows_1m_5m, model, 0.0 if engine == "onnx" else TOLERANCE)


def _check_model(predicted: pa.Table, rows: pa.Table, model, tolerance: float) -> None:
    m = model.manifest
    mine = predicted.filter(
        pc.and_(
            pc.equal(predicted.column("model_id"), m.model_id),
            pc.equal(predicted.column("model_version"), m.version),
        )
    )
    own = rows.filter(pc.equal(rows.column("timeframe"), m.timeframe))
    features = feature_matrix(own)
    direct = OnnxPredictor(m, model.model_bytes)
    values = direct.predict(features)
    np.testing.assert_allclose(
        mine.column("value").to_numpy(), values[:, 0], rtol=0, atol=tolerance
    )
    tick = TickRows(
        own.column("exchange").to_numpy(zero_copy_only=False),
        own.column("symbol").to_numpy(zero_copy_only=False),
        m.timeframe,
        own.column("open_time").to_numpy(),
        own.column("close").to_numpy(),
        0.0,
    )
    output = ModelOutput(m.model_id, m.model_type, m.version, direct.outputs.names, values)
    assert mine.column("event_id").to_pylist() == event_ids(output, tick).to_pylist()
    assert mine.column("trend").to_pylist() == trend_labels(features, FEATURE_NAMES).to_pylist()
    assert set(mine.column("environment").to_pylist()) == {"backfill"}
    assert set(mine.column("predicted_at").to_pylist()) == {NOW_MS}
    if m.model_type == "direction":
        signal, tier = direction_signals(mine.column("value").to_numpy(), 0.6, 0.7)
        assert mine.column("signal").to_pylist() == signal.to_pylist()
        assert mine.column("confidence").to_pylist() == tier.to_pylist()


def test_outcomes_equal_what_the_live_tracker_scores(shared_data, models):
    """Feed the live OutcomeTracker tick by tick, as the sink does, and compare."""
    candles = real_candles(shared_data, ("ETH/USDT",), 260)
    rows = feature_rows(candles)
    one_m = [m for m in models if m.manifest.timeframe == "1m"]
    predicted = BatchPredictor(one_m, 0.6, 0.7, NOW_MS)(rows)
    live = _live_outcomes(candles, predictions_of(predicted))
    ours = outcomes_of(predicted)
    assert ours.schema == OUTCOME_SCHEMA
    assert set(live.column("event_id").to_pylist()) == set(ours.column("event_id").to_pylist())
    assert ours.num_rows > 0.8 * predicted.num_rows  # most labels are known
    live, ours = live.sort_by("event_id"), ours.sort_by("event_id")
    for name in ("realized", "error", "log_loss", "scored_at_open_time", "value"):
        np.testing.assert_allclose(
            ours.column(name).to_numpy(zero_copy_only=False).astype(float),
            live.column(name).to_numpy(zero_copy_only=False).astype(float),
            rtol=1e-12,
            equal_nan=True,
        )
    assert ours.column("correct").to_pylist() == live.column("correct").to_pylist()


def _live_outcomes(candles: pa.Table, predictions: pa.Table) -> pa.Table:
    tracker = OutcomeTracker()
    parts = []
    times = predictions.column("open_time")
    for i in range(candles.num_rows):
        c = candles.slice(i, 1)
        t = c.column("open_time")[0].as_py()
        parts.append(
            tracker.observe_candles(
                c.column("exchange").to_numpy(zero_copy_only=False),
                c.column("symbol").to_numpy(zero_copy_only=False),
                "1m",
                [t],
                c.column("close").to_numpy(),
                c.column("high").to_numpy(),
                c.column("low").to_numpy(),
            )
        )
        tick = predictions.filter(pc.equal(times, t))
        if tick.num_rows:
            tracker.add_predictions(tick)
    return pa.concat_tables(parts)


def test_split_outputs_keep_the_live_schemas(rows_1m_5m, models):
    predicted = BatchPredictor(models[:2], 0.6, 0.7, NOW_MS)(rows_1m_5m)
    predictions = predictions_of(predicted)
    assert predictions.schema == PREDICTION_SCHEMA and predictions.num_rows == predicted.num_rows
    outcomes = outcomes_of(predicted)
    realized = predicted.column("realized").to_numpy()
    assert outcomes.num_rows == int(np.isfinite(realized).sum()) < predicted.num_rows
    evaluation = evaluation_of(predicted)
    assert evaluation.num_rows == predicted.num_rows
    assert pa.types.is_dictionary(evaluation.schema.field("model_id").type)


def test_rows_of_a_timeframe_without_models_are_ignored(rows_1m_5m, models):
    only_5m = [m for m in models if m.manifest.timeframe == "5m"]
    predicted = BatchPredictor(only_5m, 0.6, 0.7, NOW_MS)(rows_1m_5m)
    assert set(predicted.column("timeframe").to_pylist()) == {"5m"}
    assert BatchPredictor(only_5m, 0.6, 0.7, NOW_MS)(rows_1m_5m.slice(0, 0)).num_rows == 0


def test_model_specs_resolve_like_the_live_registry():
    registry = Registry(MODELS_DIR)
    chosen, skipped = select_models(
        MODELS_DIR, tuple(ModelSpec.parse("direction,swing")), ("1m", "30m")
    )
    expected = {registry.resolve(t, "1m").key for t in ("direction", "swing")}
    assert {m.key for m in chosen} == expected
    assert skipped == ["direction-30m", "swing-30m"]  # no 30m models: skipped, reported
    every = select_models(MODELS_DIR, tuple(ModelSpec.parse("all")), ("1h",))[0]
    assert {m.key for m in every} == {m.key for m in registry.manifests(timeframe="1h")}
    with pytest.raises(RegistryError):
        select_models(MODELS_DIR, (ModelSpec("direction", "v9"),), ("1m",))
    with pytest.raises(ValueError, match="unknown model type"):
        ModelSpec.parse("directions")
