"""Predictions of backfill feature rows, built exactly as the live shard builds them.

``BatchPredictor`` holds one predictor per model: its trees compiled to native code where
the model is one tree ensemble (``orchestrator.models.compiled``, checked against ONNX
Runtime on its first rows), else an ONNX Runtime session (``OnnxPredictor``, the class the
model deployments serve with); it turns ``FEATURE_ROW_SCHEMA`` rows of any timeframes
into prediction rows made by ``build_predictions`` (the live event builder: same schema,
same event ids, same signals and trend labels), each followed by its outcome: the realized
label and the live scorer's ``score`` of it (NaN/null where the label is not known).
It is the callable class a Ray Data actor pool runs, and runs in-process just the same.
Pure: no Ray, no I/O (the model bytes are handed in).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.batch.backfill.features import HIST_VOLATILITY, feature_matrix, label_column
from orchestrator.features import FEATURE_NAMES
from orchestrator.market.timeframes import timeframe_ms
from orchestrator.models.compiled import Predictor, predictor_factory
from orchestrator.models.labels import LABEL_SPECS
from orchestrator.models.registry import ModelManifest
from orchestrator.models.scoring import score
from orchestrator.stream.events import PREDICTION_SCHEMA, ModelOutput, TickRows, build_predictions
from orchestrator.stream.outcomes import OUTCOME_SCHEMA
from orchestrator.stream.signals import trend_labels

ENVIRONMENT = "backfill"  # the ``environment`` column tells backfilled rows from live ones

# Outcome and evaluation columns that follow the prediction columns in a predictor's output.
EXTRA_FIELDS = (
    pa.field("realized", pa.float64()),  # the label (class or value); NaN: not known
    pa.field("correct", pa.bool_()),  # null for regressors and unknown labels
    pa.field("error", pa.float64()),  # |error| or the Brier term, as live scoring
    pa.field("log_loss", pa.float64()),
    pa.field("scored_at_open_time", pa.int64(), nullable=False),
    pa.field("p_low", pa.float64()),  # a swing model's P(swing low); NaN for other types
    pa.field("baseline", pa.float64()),  # a regressor's naive forecast; NaN for classifiers
    pa.field("next_return", pa.float64()),  # ln(c[t+1] / c[t]): what a position earned
)
PREDICTED_SCHEMA = pa.schema([*PREDICTION_SCHEMA, *EXTRA_FIELDS])


@dataclass(frozen=True)
class LoadedModel:
    """What a worker needs to open a session: the manifest and the checked model bytes."""

    manifest: ModelManifest
    model_bytes: bytes

    @property
    def key(self) -> str:
        return self.manifest.key


class BatchPredictor:
    """Callable: ``FEATURE_ROW_SCHEMA`` rows -> ``PREDICTED_SCHEMA`` rows, one per (row,
    model of the row's timeframe)."""

    def __init__(
        self,
        models: list[LoadedModel],
        high: float,
        very_high: float,
        now_ms: int,
        environment: str = ENVIRONMENT,
        engine: str = "auto",
    ):
        """``engine``: ``auto`` runs a tree-ensemble model compiled (``compiled.py``:
        checked against ONNX Runtime on its first rows) and the rest on ONNX Runtime;
        ``onnx`` runs every model on ONNX Runtime."""
        make = predictor_factory(engine)
        self._by_timeframe: dict[str, list[Predictor]] = {}
        for model in models:
            predictor: Predictor = make(model.manifest, model.model_bytes)
            self._by_timeframe.setdefault(model.manifest.timeframe, []).append(predictor)
        self._high, self._very_high = high, very_high
        self._now_ms, self._environment = now_ms, environment

    def __call__(self, rows: pa.Table) -> pa.Table:
        parts = []
        for timeframe, group in _by_timeframe(rows):
            models = self._by_timeframe.get(timeframe, [])
            if models:
                parts.extend(self._predict(timeframe, group, models))
        return pa.concat_tables(parts) if parts else PREDICTED_SCHEMA.empty_table()

    def _predict(self, timeframe: str, rows: pa.Table, models: list[Predictor]) -> list[pa.Table]:
        features = feature_matrix(rows)
        tick = TickRows(
            # Arrow strings, not numpy objects: build_predictions only passes them to
            # pa.array, which takes them as they are (a third of its cost otherwise).
            exchange=rows.column("exchange").combine_chunks(),
            symbol=rows.column("symbol").combine_chunks(),
            timeframe=timeframe,
            open_time=rows.column("open_time").to_numpy(),
            close=rows.column("close").to_numpy(),
            emitted_at_ms=float(self._now_ms),
            trend=trend_labels(features, FEATURE_NAMES),
        )
        return [self._model_rows(model, features, tick, rows) for model in models]

    def _model_rows(
        self, model: Predictor, features: np.ndarray, tick: TickRows, rows: pa.Table
    ) -> pa.Table:
        output = ModelOutput.from_response(model.answer(model.predict(features), features))
        predictions = build_predictions(
            output,
            tick,
            float(self._now_ms),
            self._high,
            self._very_high,
            environment=self._environment,
        )
        extras = outcome_columns(output, tick, rows)
        return pa.Table.from_arrays(
            [*predictions.columns, *(extras[f.name] for f in EXTRA_FIELDS)], schema=PREDICTED_SCHEMA
        )


def _by_timeframe(rows: pa.Table) -> list[tuple[str, pa.Table]]:
    timeframes = rows.column("timeframe")
    names = pc.unique(timeframes).to_pylist()
    if len(names) == 1:
        return [(names[0], rows)]
    return [(tf, rows.filter(pc.equal(timeframes, tf))) for tf in names]


def outcome_columns(output: ModelOutput, tick: TickRows, rows: pa.Table) -> dict[str, pa.Array]:
    """Realized label and live scores of each prediction, plus the evaluation inputs."""
    model_type, values = output.model_type, output.values
    realized = rows.column(label_column(model_type)).to_numpy()
    p_low = _named_output(output, "p_swing_low")
    known = np.isfinite(realized)
    hit, error, log_loss = (np.full(len(realized), np.nan) for _ in range(3))
    if known.any():
        scored = score(model_type, values[known, 0], p_low[known], realized[known])
        hit[known], error[known], log_loss[known] = scored
    horizon = LABEL_SPECS[model_type].horizon * timeframe_ms(tick.timeframe)
    return {
        "realized": pa.array(realized),
        "correct": pa.array(hit == 1.0, mask=np.isnan(hit)),
        "error": pa.array(error),
        "log_loss": pa.array(log_loss, mask=np.isnan(log_loss)),  # null, as live
        "scored_at_open_time": pa.array(tick.open_time + horizon, pa.int64()),
        "p_low": pa.array(p_low),
        "baseline": pa.array(naive_forecast(model_type, rows)),
        "next_return": pa.array(rows.column(label_column("return")).to_numpy()),
    }


def _named_output(output: ModelOutput, name: str) -> np.ndarray:
    if name in output.names:
        return output.values[:, output.names.index(name)]
    return np.full(len(output.values), np.nan)


def naive_forecast(model_type: str, rows: pa.Table) -> np.ndarray:
    """The regressors' row-wise naive forecast (as in training): historical volatility,
    and "no change" for the return; classifiers' constant baselines come later."""
    if model_type == "volatility":
        return rows.column(HIST_VOLATILITY).to_numpy()
    if model_type == "return":
        return np.zeros(rows.num_rows)
    return np.full(rows.num_rows, np.nan)


def predictions_of(predicted: pa.Table) -> pa.Table:
    """The live prediction log's rows (``PREDICTION_SCHEMA``)."""
    return predicted.select(PREDICTION_SCHEMA.names).cast(PREDICTION_SCHEMA)


def outcomes_of(predicted: pa.Table) -> pa.Table:
    """The live outcome log's rows (``OUTCOME_SCHEMA``) of predictions whose label is known."""
    settled = predicted.filter(pc.invert(pc.is_nan(predicted.column("realized"))))
    return settled.select(OUTCOME_SCHEMA.names).cast(OUTCOME_SCHEMA)


EVALUATION_COLUMNS = (
    "model_id",
    "model_version",
    "model_type",
    "exchange",
    "symbol",
    "timeframe",
    "open_time",
    "value",
    "p_low",
    "realized",
    "baseline",
    "next_return",
    "signal",
)


def evaluation_of(predicted: pa.Table) -> pa.Table:
    """What the evaluation report reads, strings dictionary-encoded to keep it small."""
    table = predicted.select(EVALUATION_COLUMNS)
    for name in (
        "model_id",
        "model_version",
        "model_type",
        "exchange",
        "symbol",
        "timeframe",
        "signal",
    ):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pc.dictionary_encode(table.column(name)))
    return table
