"""Vectorized candle validation and the quarantine that keeps what it rejects.

Every check runs over whole numpy/Arrow columns; per-row Python happens only for the
rejected rows a ``Quarantine`` keeps (a bounded number), so clean data costs a few
column passes and no copy.

API
---
``validate_candles(data, *, timeframe="1m", now_ms=None, exchange=None, symbols=None,
future_tolerance_ms=FUTURE_TOLERANCE_MS) -> Validated(valid, rejects)``
    ``data`` is a ``pa.RecordBatch`` or ``pa.Table`` holding the ``CANDLE_SCHEMA`` columns
    (other column orders / compatible types are conformed; a missing required column is
    a ValueError: that is a bug in a source, not bad data). ``valid`` has the type of
    ``data`` and exactly ``CANDLE_SCHEMA``; when nothing is rejected it is ``data`` itself.
    ``now_ms=None`` skips the future check; ``exchange=None`` / ``symbols=None`` accept
    any exchange / any non-empty symbol.
``Rejects``: ``rows`` (``pa.Table`` of the rejected rows, unchanged), ``reasons`` (one
    code per row), ``counts()``, ``records(limit)``, ``Rejects.of(rows, reason)``.
``RejectRecord(reason, exchange, symbol, open_time, payload)``: one quarantined row;
    ``payload`` is the raw row as a plain dict.
``Quarantine(max_records=1000)``: ``add(rejects)``, ``counts`` (unbounded, per reason),
    ``total``, ``records`` (the most recent ``max_records``), ``snapshot()`` /
    ``Quarantine.from_snapshot(snap)`` as plain picklable data.

Reason codes (``Reason``, a ``StrEnum``: the values are the stable strings). A row gets
the first reason that applies, in this order:
``null_value`` (a required column is null), ``wrong_exchange``, ``wrong_timeframe``,
``unknown_symbol`` (empty, or not in ``symbols``), ``non_finite`` (NaN/inf in any price or
volume column, optional ones included), ``non_positive_price``, ``high_below_low``,
``high_below_open_close``, ``low_above_open_close``, ``negative_volume`` (volume or any
present optional volume/count column), ``misaligned_open_time``, ``bad_close_time``
(not ``open_time + timeframe_ms - 1``), ``future_open_time`` (``open_time > now_ms +
future_tolerance_ms``). ``out_of_order`` is never produced here: the gate uses it; nor are
``undecodable`` and ``bad_message``: message sources use them (``orchestrator.market.formats``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.market.schema import (
    CANDLE_SCHEMA,
    OPTIONAL_COLUMNS,
    PRICE_COLUMNS,
    conform_candles,
)
from orchestrator.market.timeframes import timeframe_ms

# Exchange and local clocks disagree by a few seconds; a candle that opened "slightly in
# the future" by our clock is skew, not a bad candle.
FUTURE_TOLERANCE_MS = 10_000
OPTIONAL_FLOAT_COLUMNS = ("quote_volume", "taker_buy_base", "taker_buy_quote")


class Reason(StrEnum):
    NULL_VALUE = "null_value"
    WRONG_EXCHANGE = "wrong_exchange"
    WRONG_TIMEFRAME = "wrong_timeframe"
    UNKNOWN_SYMBOL = "unknown_symbol"
    NON_FINITE = "non_finite"
    NON_POSITIVE_PRICE = "non_positive_price"
    HIGH_BELOW_LOW = "high_below_low"
    HIGH_BELOW_BODY = "high_below_open_close"
    LOW_ABOVE_BODY = "low_above_open_close"
    NEGATIVE_VOLUME = "negative_volume"
    MISALIGNED = "misaligned_open_time"
    BAD_CLOSE_TIME = "bad_close_time"
    FUTURE = "future_open_time"
    OUT_OF_ORDER = "out_of_order"
    # Not produced here either: a message source could not read a candle out of a message.
    UNDECODABLE = "undecodable"  # not a JSON object
    BAD_MESSAGE = "bad_message"  # JSON, but no known candle format, or a field missing


REASONS: tuple[str, ...] = tuple(r.value for r in Reason)


@dataclass(frozen=True, slots=True)
class RejectRecord:
    reason: str
    exchange: str | None
    symbol: str | None
    open_time: int | None
    payload: dict

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rejects:
    """Rejected rows (raw, as received) and one reason code per row."""

    rows: pa.Table
    reasons: np.ndarray

    @classmethod
    def none(cls) -> Rejects:
        return _NO_REJECTS

    @classmethod
    def of(cls, rows: pa.Table | pa.RecordBatch, reason: str) -> Rejects:
        """All ``rows`` rejected for one ``reason``."""
        table = _as_table(rows)
        return cls(table, np.full(table.num_rows, str(reason), dtype=object))

    def __len__(self) -> int:
        return self.rows.num_rows

    def counts(self) -> dict[str, int]:
        if not len(self):
            return {}
        names, counts = np.unique(self.reasons.astype(str), return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    def records(self, limit: int | None = None) -> list[RejectRecord]:
        """The last ``limit`` rejected rows as records (all of them when ``limit`` is None)."""
        start = 0 if limit is None else max(0, len(self) - limit)
        rows = self.rows.slice(start).to_pylist()
        return [_record(str(r), row) for r, row in zip(self.reasons[start:], rows, strict=True)]


_NO_REJECTS = Rejects(CANDLE_SCHEMA.empty_table(), np.empty(0, dtype=object))


def _record(reason: str, row: dict) -> RejectRecord:
    return RejectRecord(reason, row.get("exchange"), row.get("symbol"), row.get("open_time"), row)


class Validated(NamedTuple):
    valid: pa.RecordBatch | pa.Table
    rejects: Rejects


def validate_candles(
    data: pa.RecordBatch | pa.Table,
    *,
    timeframe: str = "1m",
    now_ms: int | None = None,
    exchange: str | None = None,
    symbols: Iterable[str] | None = None,
    future_tolerance_ms: int = FUTURE_TOLERANCE_MS,
) -> Validated:
    """Split ``data`` into schema-exact valid rows and reason-coded rejects."""
    data = _conform(data)
    if data.num_rows == 0:
        return Validated(data, Rejects.none())
    rules = _Rules(timeframe, now_ms, exchange, symbols, future_tolerance_ms)
    masks = _reason_masks(data, rules)
    bad = np.logical_or.reduce([mask for _, mask in masks])
    if not bad.any():
        return Validated(data, Rejects.none())
    codes = np.select([mask for _, mask in masks], [str(r) for r, _ in masks], default="")
    rejects = Rejects(_as_table(data.filter(pa.array(bad))), codes[bad].astype(object))
    return Validated(data.filter(pa.array(~bad)), rejects)


class _Rules(NamedTuple):
    timeframe: str
    now_ms: int | None
    exchange: str | None
    symbols: Iterable[str] | None
    future_tolerance_ms: int


def _reason_masks(data, rules: _Rules) -> list[tuple[Reason, np.ndarray]]:
    """(reason, boolean row mask) in priority order; ``np.select`` keeps the first hit."""
    tf_ms = timeframe_ms(rules.timeframe)
    o, h, lo, c = (_floats(data, name) for name in PRICE_COLUMNS)
    volume = _floats(data, "volume")
    open_time = _ints(data, "open_time")
    masks = [
        (Reason.NULL_VALUE, _required_nulls(data)),
        (Reason.WRONG_EXCHANGE, _differs(data, "exchange", rules.exchange)),
        (Reason.WRONG_TIMEFRAME, _differs(data, "timeframe", rules.timeframe)),
        (Reason.UNKNOWN_SYMBOL, _bad_symbols(data, rules.symbols)),
        (Reason.NON_FINITE, _non_finite(data, (o, h, lo, c, volume))),
        (Reason.NON_POSITIVE_PRICE, (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)),
        (Reason.HIGH_BELOW_LOW, h < lo),
        (Reason.HIGH_BELOW_BODY, h < np.maximum(o, c)),
        (Reason.LOW_ABOVE_BODY, lo > np.minimum(o, c)),
        (Reason.NEGATIVE_VOLUME, _negative_volumes(data, volume)),
        (Reason.MISALIGNED, open_time % tf_ms != 0),
        (Reason.BAD_CLOSE_TIME, _ints(data, "close_time") != open_time + (tf_ms - 1)),
    ]
    if rules.now_ms is not None:
        masks.append((Reason.FUTURE, open_time > rules.now_ms + rules.future_tolerance_ms))
    return masks


def _floats(data, name: str) -> np.ndarray:
    column = data.column(name)
    if column.null_count:
        column = pc.fill_null(column, 1.0)  # null rows are rejected as null_value anyway
    return column.to_numpy()


def _ints(data, name: str) -> np.ndarray:
    column = data.column(name)
    if column.null_count:
        column = pc.fill_null(column, 0)
    return column.to_numpy()


def _bools(result) -> np.ndarray:
    return pc.fill_null(result, False).to_numpy(zero_copy_only=False)


def _required_nulls(data) -> np.ndarray:
    mask = np.zeros(data.num_rows, dtype=bool)
    for field in CANDLE_SCHEMA:
        column = data.column(field.name)
        if not field.nullable and column.null_count:
            mask |= _bools(column.is_null())
    return mask


def _differs(data, name: str, expected: str | None) -> np.ndarray:
    if expected is None:
        return np.zeros(data.num_rows, dtype=bool)
    return _bools(pc.not_equal(data.column(name), expected))


def _bad_symbols(data, symbols: Iterable[str] | None) -> np.ndarray:
    column = data.column("symbol")
    empty = _bools(pc.equal(pc.binary_length(column), 0))
    if symbols is None:
        return empty
    known = pa.array(sorted(set(symbols)), pa.string())
    return empty | ~_bools(pc.is_in(column, value_set=known))


def _present_optional(data, name: str) -> np.ndarray | None:
    """Values of an optional column with nulls as 0, or None when it is all null."""
    column = data.column(name)
    if column.null_count == data.num_rows:
        return None
    return _ints(data, name) if name == "trade_count" else _floats_null_zero(column)


def _floats_null_zero(column) -> np.ndarray:
    return (pc.fill_null(column, 0.0) if column.null_count else column).to_numpy()


def _non_finite(data, required: tuple[np.ndarray, ...]) -> np.ndarray:
    mask = ~np.isfinite(required[0])
    for values in required[1:]:
        mask |= ~np.isfinite(values)
    for name in OPTIONAL_FLOAT_COLUMNS:
        optional = _present_optional(data, name)
        if optional is not None:
            mask |= ~np.isfinite(optional)
    return mask


def _negative_volumes(data, volume: np.ndarray) -> np.ndarray:
    mask = volume < 0
    for name in OPTIONAL_COLUMNS:
        values = _present_optional(data, name)
        if values is not None:
            mask |= values < 0
    return mask


def _conform(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch | pa.Table:
    """Exactly ``CANDLE_SCHEMA`` (zero-copy when only nullability flags differ)."""
    if data.schema.equals(CANDLE_SCHEMA):
        return data
    if data.schema.names == CANDLE_SCHEMA.names and data.schema.types == CANDLE_SCHEMA.types:
        return type(data).from_arrays(list(data.columns), schema=CANDLE_SCHEMA)
    table = conform_candles(_as_table(data))
    return table if isinstance(data, pa.Table) else table_to_batch(table)


def table_to_batch(table: pa.Table) -> pa.RecordBatch:
    """One ``RecordBatch`` holding all of ``table`` (empty tables included)."""
    columns = [column.combine_chunks() for column in table.columns]
    return pa.RecordBatch.from_arrays(columns, schema=table.schema)


def _as_table(data: pa.RecordBatch | pa.Table) -> pa.Table:
    return data if isinstance(data, pa.Table) else pa.Table.from_batches([data])


class Quarantine:
    """Bounded recent rejects plus unbounded per-reason counters."""

    def __init__(self, max_records: int = 1000) -> None:
        if max_records < 0:
            raise ValueError(f"max_records must be >= 0, got {max_records}")
        self.max_records = max_records
        self._records: deque[RejectRecord] = deque(maxlen=max_records)
        self._counts: dict[str, int] = {}

    def add(self, rejects: Rejects) -> None:
        for reason, count in rejects.counts().items():
            self._counts[reason] = self._counts.get(reason, 0) + count
        if self.max_records and len(rejects):
            self._records.extend(rejects.records(limit=self.max_records))

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    @property
    def records(self) -> list[RejectRecord]:
        return list(self._records)

    def snapshot(self) -> dict:
        return {
            "max_records": self.max_records,
            "counts": dict(self._counts),
            "records": [r.to_dict() for r in self._records],
        }

    @classmethod
    def from_snapshot(cls, snapshot: dict) -> Quarantine:
        quarantine = cls(snapshot["max_records"])
        quarantine._counts = dict(snapshot["counts"])
        quarantine._records.extend(RejectRecord(**r) for r in snapshot["records"])
        return quarantine
