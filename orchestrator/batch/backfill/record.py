"""The completion record a backfill announces: what ran, over what, what it wrote (pure).

Plain JSON-able data: printed by ``tickcast backfill``, written as
``<out>/completion.json`` and published as a ``backfill_complete`` record on the event
bus (``RedisStreamBus.publish_record``) when one is configured.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

RECORD_KIND = "backfill_complete"


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


@dataclass
class LoadStats:
    """Counters of what reading kept and dropped (plain data for the completion record)."""

    files: int = 0
    candles: int = 0
    invalid: int = 0
    duplicates: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, other: LoadStats) -> None:
        self.files += other.files
        self.candles += other.candles
        self.invalid += other.invalid
        self.duplicates += other.duplicates
        for reason, n in other.by_reason.items():
            self.by_reason[reason] = self.by_reason.get(reason, 0) + n


@dataclass
class RunCounts:
    """What a run saw and wrote; filled in stage by stage."""

    series: int = 0
    loaded: LoadStats = field(default_factory=LoadStats)  # what reading kept and dropped
    predictions: int = 0
    outcomes: int = 0
    predictions_by_model: Counter = field(default_factory=Counter)
    rows_replaced: int = 0  # stored rows the run removed before writing its own
    files_written: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def completion_record(
    *,
    run_id: str,
    started_ms: int,
    finished_ms: int,
    options: dict,
    counts: RunCounts,
    outputs: dict[str, str | None],
    skipped_models: list[str],
) -> dict:
    """The record: ``options`` says what was asked (sources, range, timeframes, models,
    executor), ``outputs`` where the results are."""
    return {
        "kind": RECORD_KIND,
        "run_id": run_id,
        "status": "complete",
        "started_at": iso_ms(started_ms),
        "finished_at": iso_ms(finished_ms),
        "duration_s": round((finished_ms - started_ms) / 1000.0, 3),
        **options,
        "counts": {
            "series": counts.series,
            "candles": counts.loaded.candles,
            "invalid_candles": counts.loaded.invalid,
            "invalid_by_reason": dict(sorted(counts.loaded.by_reason.items())),
            "duplicate_candles": counts.loaded.duplicates,
            "files_read": counts.loaded.files,
            "predictions": counts.predictions,
            "outcomes": counts.outcomes,
            "rows_replaced": counts.rows_replaced,
            "files_written": counts.files_written,
            "predictions_by_model": dict(sorted(counts.predictions_by_model.items())),
        },
        "stage_seconds": {k: round(v, 3) for k, v in counts.stage_seconds.items()},
        "skipped_models": skipped_models,
        "outputs": outputs,
    }
