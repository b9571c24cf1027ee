"""One backfill run, stage by stage: models, candles, predictions, files, report, record.

``run_backfill(options)`` is what ``tickcast backfill`` calls. The predictions stage runs
through Ray Data (``executor="ray"``: an actor pool computing each series' features and
predicting them with ONNX sessions; see ``orchestrator.batch.backfill.ray_data``) or in this
process (``executor="local"``: the same pure functions, one series after another). Both
give the same rows. Every stage prints a line when it starts and when it is done.

Output layout under ``out``: ``predictions/`` (the live prediction log's layout and schema,
``environment`` = "backfill"), ``outcomes/`` (the live outcome log's schema) and
``completion.json``; the report goes to ``report_dir``. Keep ``out`` apart from the live
log's folder: a live row and a backfilled row of the same key would then both be read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import pyarrow as pa

from orchestrator import PROJECT_ROOT
from orchestrator.batch.backfill.features import feature_rows
from orchestrator.batch.backfill.models import DEFAULT_SPECS, ModelSpec, select_models
from orchestrator.batch.backfill.predict import (
    ENVIRONMENT,
    BatchPredictor,
    LoadedModel,
    evaluation_of,
    outcomes_of,
    predictions_of,
)
from orchestrator.batch.backfill.record import RECORD_KIND, RunCounts, completion_record, iso_ms
from orchestrator.batch.backfill.sources import (
    DataSource,
    load_series,
    plan_series,
    target_candles,
)
from orchestrator.batch.backfill.writer import (
    DEFAULT_FLUSH_ROWS,
    ModelKey,
    PartitionedWriter,
    Scope,
)
from orchestrator.config import SignalConfig
from orchestrator.storage import locate
from orchestrator.stream.events import PREDICTION_SCHEMA
from orchestrator.stream.outcomes import OUTCOME_SCHEMA

MODEL_TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")


@dataclass(frozen=True)
class BackfillOptions:
    sources: tuple[DataSource, ...]
    out: Path | str  # a folder or an object-store URI (orchestrator.storage)
    timeframes: tuple[str, ...] = MODEL_TIMEFRAMES
    models: tuple[ModelSpec, ...] = DEFAULT_SPECS
    symbols: tuple[str, ...] | None = None
    start_ms: int | None = None  # candles closing in [start_ms, end_ms); None: unbounded
    end_ms: int | None = None
    report_dir: Path | None = None  # None: no report
    redis_url: str | None = None
    executor: Literal["ray", "local"] = "ray"
    num_actors: int = 2
    actor_cpus: float = 0.5
    feature_cpus: float = 0.5  # for the feature map if Ray Data does not fuse it into the actors
    batch_size: int = 65_536
    engine: str = "auto"  # "onnx": every model on ONNX Runtime (predict.ENGINES)
    flush_rows: int = DEFAULT_FLUSH_ROWS  # rows buffered per output before merging to files
    models_dir: Path | str = PROJECT_ROOT / "models_onnx"  # a folder or mlflow:<URI>
    environment: str = ENVIRONMENT
    signals: SignalConfig = SignalConfig()
    now_ms: int | None = None  # predicted_at of every row; None: the run's start

    def describe(self) -> dict:
        return {
            "sources": [s.describe() for s in self.sources],
            "symbols": list(self.symbols) if self.symbols else None,
            "start": iso_ms(self.start_ms),
            "end": iso_ms(self.end_ms),
            "timeframes": list(self.timeframes),
            "models": [f"{m.model_type}@{m.version or 'production'}" for m in self.models],
            "executor": self.executor,
            "environment": self.environment,
        }


Say = Callable[[str], None]


@dataclass
class _Sink:
    """Consumes predicted rows: writers, evaluation inputs, counters."""

    predictions: PartitionedWriter
    outcomes: PartitionedWriter
    counts: RunCounts
    evaluation: list[pa.Table] = field(default_factory=list)
    keep_evaluation: bool = True

    def __call__(self, predicted: pa.Table) -> None:
        if predicted.num_rows == 0:
            return
        outcomes = outcomes_of(predicted)
        self.predictions.append(predictions_of(predicted))
        self.outcomes.append(outcomes)
        if self.keep_evaluation:
            self.evaluation.append(evaluation_of(predicted))
        self.counts.predictions += predicted.num_rows
        self.counts.outcomes += outcomes.num_rows
        per_model = (
            predicted.group_by(["model_id", "model_version"])
            .aggregate([("event_id", "count")])
            .to_pylist()
        )
        for row in per_model:
            key = f"{row['model_id']}@{row['model_version']}"
            self.counts.predictions_by_model[key] += row["event_id_count"]

    def finish(self) -> None:
        self.predictions.flush()
        self.outcomes.flush()
        self.counts.rows_replaced = self.predictions.rows_removed
        self.counts.files_written = len(
            self.predictions.files_touched | self.outcomes.files_touched
        )


def run_backfill(options: BackfillOptions, say: Say = print) -> dict:
    """Run every stage; returns the completion record (also written and published)."""
    started_ms, clock = int(time.time() * 1000), time.perf_counter()
    counts = RunCounts()
    models, skipped = _stage(counts, "models", say, lambda: _models(options))
    timeframes = tuple(
        tf for tf in options.timeframes if any(m.manifest.timeframe == tf for m in models)
    )
    series = _stage(counts, "candles", say, lambda: load_candles(options, timeframes, counts))
    sink = _open_sink(options, counts)
    _stage(counts, "clear", say, lambda: _clear(sink, options, models, series))
    now_ms = options.now_ms if options.now_ms is not None else started_ms
    _stage(
        counts,
        "predict",
        say,
        lambda: _consume(predict_stream(series, models, options, now_ms), sink),
    )
    _stage(counts, "write", say, sink.finish)
    report = None
    if options.report_dir is not None:
        report = _stage(counts, "report", say, lambda: _report(options, sink, models))
    finished_ms = started_ms + int((time.perf_counter() - clock) * 1000)
    record = completion_record(
        run_id=uuid.uuid4().hex,
        started_ms=started_ms,
        finished_ms=finished_ms,
        options=options.describe(),
        counts=counts,
        skipped_models=skipped,
        outputs={
            "predictions": str(sink.predictions.root),
            "outcomes": str(sink.outcomes.root),
            "report": None if report is None else str(report),
        },
    )
    _announce(options, record, say)
    return record


def _stage(counts: RunCounts, name: str, say: Say, work: Callable):
    say(f"[backfill] {name} ...")
    began = time.perf_counter()
    result = work()
    counts.stage_seconds[name] = elapsed = time.perf_counter() - began
    say(f"[backfill] {name} done in {elapsed:.1f} s{_summary(name, counts, result)}")
    return result


def _summary(name: str, counts: RunCounts, result) -> str:
    if name == "models":
        return f": {', '.join(m.key for m in result[0])}"
    if name == "candles":
        return f": {counts.series} series, {counts.loaded.candles:,} candles"
    if name == "clear":
        return f": {result:,} stored rows of this range removed"
    if name == "write":
        return f": {counts.predictions:,} predictions, {counts.outcomes:,} outcomes"
    if name == "report":
        return f": {result}"
    return ""


def _models(options: BackfillOptions) -> tuple[list[LoadedModel], list[str]]:
    models, skipped = select_models(options.models_dir, options.models, options.timeframes)
    if not models:
        raise ValueError(f"no model for timeframes {options.timeframes} in {options.models_dir}")
    return models, skipped


def load_candles(
    options: BackfillOptions, timeframes: tuple[str, ...], counts: RunCounts | None = None
) -> list[pa.Table]:
    """One time-ordered candle table per (exchange, symbol, timeframe) over all sources."""
    counts = counts if counts is not None else RunCounts()
    parts: dict[tuple[str, str, str], list[tuple[pa.Table, str]]] = {}
    for source in options.sources:
        for plan in plan_series(source, options.symbols, timeframes):
            base, loaded = load_series(plan)
            counts.loaded.add(loaded)
            for timeframe, candles in target_candles(base, plan.targets).items():
                if candles.num_rows:
                    key = (
                        candles.column("exchange")[0].as_py(),
                        candles.column("symbol")[0].as_py(),
                        timeframe,
                    )
                    parts.setdefault(key, []).append((candles, source.describe()))
    if not parts:
        raise ValueError(
            f"no candles of {timeframes} for {options.symbols or 'any symbol'} in "
            f"{[s.describe() for s in options.sources]}"
        )
    series = [_one_series(key, found) for key, found in sorted(parts.items())]
    counts.series = len(series)
    return series


def _one_series(key: tuple[str, str, str], found: list[tuple[pa.Table, str]]) -> pa.Table:
    """The parts of one series from several sources, which must not overlap in time."""
    if len(found) == 1:
        return found[0][0]
    table = pa.concat_tables([t for t, _ in found]).sort_by("open_time")
    open_time = table.column("open_time").to_numpy()
    if (open_time[1:] == open_time[:-1]).any():
        raise ValueError(
            f"series {key} is in more than one source with overlapping times "
            f"({[s for _, s in found]}); label one source with another "
            "exchange name (EXCHANGE=PATH)"
        )
    return table


def _open_sink(options: BackfillOptions, counts: RunCounts) -> _Sink:
    out = locate(options.out)
    return _Sink(
        PartitionedWriter(out / "predictions", PREDICTION_SCHEMA, options.flush_rows),
        PartitionedWriter(out / "outcomes", OUTCOME_SCHEMA, options.flush_rows),
        counts,
        keep_evaluation=options.report_dir is not None,
    )


def run_scope(options: BackfillOptions, models: list[LoadedModel], series: list[pa.Table]) -> Scope:
    keys = tuple(
        ModelKey(m.manifest.model_id, m.manifest.version, m.manifest.timeframe) for m in models
    )
    names = tuple(
        (
            t.column("exchange")[0].as_py(),
            t.column("symbol")[0].as_py(),
            t.column("timeframe")[0].as_py(),
        )
        for t in series
    )
    return Scope(keys, names, options.start_ms, options.end_ms)


def _clear(sink: _Sink, options: BackfillOptions, models, series) -> int:
    scope = run_scope(options, models, series)
    sink.outcomes.clear(scope)
    return sink.predictions.clear(scope)


def predict_stream(
    series: list[pa.Table], models: list[LoadedModel], options: BackfillOptions, now_ms: int
) -> Iterator[pa.Table]:
    """Predicted rows (``PREDICTED_SCHEMA``) of every series, in pieces."""
    if options.executor == "ray":
        from orchestrator.batch.backfill.ray_data import predict_with_ray_data

        yield from predict_with_ray_data(series, models, options, now_ms)
        return
    predictor = BatchPredictor(
        models,
        options.signals.high,
        options.signals.very_high,
        now_ms,
        options.environment,
        options.engine,
    )
    for candles in series:
        rows = feature_rows(candles, options.start_ms, options.end_ms, label_types(models))
        for start in range(0, rows.num_rows, options.batch_size):
            yield predictor(rows.slice(start, options.batch_size))


def label_types(models: list[LoadedModel]) -> tuple[str, ...]:
    """The model types whose realized labels a run needs."""
    return tuple(sorted({m.manifest.model_type for m in models}))


def _consume(stream: Iterator[pa.Table], sink: _Sink) -> None:
    for predicted in stream:
        sink(predicted)


def _report(options: BackfillOptions, sink: _Sink, models: list[LoadedModel]) -> Path:
    from orchestrator.batch.evaluation.report import write_report

    evaluation = pa.concat_tables(sink.evaluation) if sink.evaluation else None
    sink.evaluation = []
    return write_report(
        evaluation, Path(options.report_dir), options.describe(), training_ranges(models)
    )


def training_ranges(models: list[LoadedModel]) -> dict[str, tuple[int, int]]:
    """model key -> (first, last) open time it was trained on, from its manifest."""
    ranges = {}
    for model in models:
        span = (getattr(model.manifest, "training", None) or {}).get("range")
        if span and len(span) == 2:
            ranges[model.key] = tuple(
                int(datetime.fromisoformat(t).timestamp() * 1000) for t in span
            )
    return ranges


def _announce(options: BackfillOptions, record: dict, say: Say) -> None:
    """Write the record beside the output and publish it on the event bus, if any."""
    (locate(options.out) / "completion.json").write_text(json.dumps(record, indent=2) + "\n")
    if options.redis_url:
        from orchestrator.sinks.redis_bus import RedisStreamBus

        bus = RedisStreamBus(options.redis_url)
        try:
            entry = bus.publish_record(RECORD_KIND, record)
        finally:
            bus.close()
        say(f"[backfill] completion record published on the event bus ({entry})")
