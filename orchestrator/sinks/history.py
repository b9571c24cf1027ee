"""Pages of the prediction log that cost what the page needs, not what the log holds.

The log is partitioned ``date=YYYY-MM-DD/timeframe=TF`` by the candle's UTC open date, so
rows in an earlier date partition come before every row of a later one in the page order
(open_time, symbol, model_id). A page is read one date at a time, in the order asked for,
and the walk stops at the first date after which it has enough rows: a page of the newest
(or oldest) rows of a 30-day log opens one or two days of files, whatever its size. Inside a
date, the symbol / model / time filters are pushed down to the row groups (their statistics
rule out most of a compacted file, sorted by symbol: see ``compaction``); a first pass reads
only the three ordering columns of what is left, keeping the best ``offset + limit + 1``
keys, and a second reads whole rows from just the row groups that hold them. Memory is
bounded by the page and a row group, not by a partition or the log.

Deep pages go by a cursor (the last row's key, opaque to clients), not by an offset over
everything; an offset still works and costs what it skips. ``total`` (every matching row of
the log) is counted only when asked: it is the one answer that has to touch every date.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import operator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from orchestrator.sinks.compaction import live_files
from orchestrator.sinks.parquet_log import utc_date
from orchestrator.storage import Location, locate
from orchestrator.stream.events import PREDICTION_SCHEMA

log = logging.getLogger(__name__)
# Files of the log that cannot be read (a disk or copy gone wrong), by (path, size, mtime):
# pages skip them, each is logged once, and the compactor leaves their folder unmerged.
_damaged: dict[tuple[str, int, float], str] = {}

ORDER_COLUMNS = ("open_time", "symbol", "model_id")
LOG_SCHEMA = PREDICTION_SCHEMA.append(pa.field("date", pa.string()))
PARTITIONING = ds.partitioning(
    pa.schema([("date", pa.string()), ("timeframe", pa.string())]), flavor="hive"
)
TRIM_ROWS = 65_536  # key rows held past 2 x the page before they are trimmed
PIECE, ROW = "__piece", "__row"  # where a first-pass key came from


@dataclass(frozen=True)
class HistoryQuery:
    """A page of the prediction log: filters, then ``limit`` rows after ``cursor`` (or from
    ``offset``), ordered by (open_time, symbol, model_id), newest first if ``descending``."""

    symbol: str | None = None
    timeframe: str | None = None
    model_id: str | None = None
    start_ms: int | None = None  # inclusive, candle open time
    end_ms: int | None = None  # exclusive
    limit: int = 500
    offset: int = 0
    cursor: str | None = None  # ``next_cursor`` of the previous page
    descending: bool = False
    count: bool = False  # also count every matching row (touches every date)
    role: str | None = None  # that role's events, published or not; None: the published ones


@dataclass(frozen=True)
class HistoryPage:
    rows: list[dict]
    next_cursor: str | None  # None: this was the last page
    total: int | None  # only when the query asked for a count
    dates_read: int  # date partitions the page opened (the cost, for tests and benchmarks)
    skipped_files: int = 0  # damaged files of those dates left out: rows may be missing


class BadCursor(ValueError):
    """A cursor that this log never handed out (or one of the other direction)."""


def encode_cursor(row: dict, descending: bool) -> str:
    key = [int(row["open_time"]), row["symbol"], row["model_id"], "d" if descending else "a"]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, descending: bool) -> tuple[int, str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        open_time, symbol, model_id, direction = json.loads(raw)
        key = (int(open_time), str(symbol), str(model_id))
    except (ValueError, TypeError) as exc:
        raise BadCursor("cursor is not one this API handed out") from exc
    if direction != ("d" if descending else "a"):
        raise BadCursor("cursor was handed out for the other order")
    return key


def query_log(where: Location | Path | str, query: HistoryQuery) -> HistoryPage:
    """One page of the log under ``where`` (a missing folder is an empty log)."""
    root = locate(where)
    after = decode_cursor(query.cursor, query.descending) if query.cursor else None
    need = query.offset + query.limit + 1  # one more than the page: is there a next page?
    best: list[pa.Table] = []
    held = dates_read = skipped = 0
    for date in _dates(root, query, after):
        table = _retrying(_read_date, root, date, query, after, need)
        dates_read += 1
        skipped += len(_damaged_in(_files(root, date, query))) if _damaged else 0
        if table.num_rows:
            best.append(table)
            held += table.num_rows
        if held >= need:
            break  # every later date sorts after every row held
    rows_table = _ordered(best, query.descending) if best else None
    rows: list[dict] = []
    if rows_table is not None:
        rows = _pylist(rows_table.slice(query.offset, query.limit))
    more = rows_table is not None and rows_table.num_rows > query.offset + query.limit
    cursor = encode_cursor(rows[-1], query.descending) if more and rows else None
    total = count_rows(root, query) if query.count else None
    return HistoryPage(rows, cursor, total, dates_read, skipped)


def count_rows(where: Location | Path | str, query: HistoryQuery) -> int:
    """Every row matching the filters (the cursor and the page ignored)."""
    root = locate(where)
    unpaged = replace(query, cursor=None, offset=0, count=False)
    total = 0
    for date in _dates(root, unpaged, None):
        total += _retrying(_count_date, root, date, unpaged)
    return total


def _count_date(root: Location, date: str, query: HistoryQuery) -> int:
    dataset = _date_dataset(root, date, query)
    return 0 if dataset is None else dataset.count_rows(filter=_row_filter(query, None))


def _retrying(read, root: Location, date: str, query: HistoryQuery, *args):
    """A compaction may delete a file between the listing and the read: list again. A file
    that cannot be read at all is set aside (``_damaged``) and the date read without it."""
    for _ in range(2):
        with contextlib.suppress(FileNotFoundError):
            try:
                return read(root, date, query, *args)
            except (pa.ArrowInvalid, OSError) as exc:
                if isinstance(exc, FileNotFoundError) or not _find_damaged(root, date, query):
                    raise
    return read(root, date, query, *args)


def _files(root: Location, date: str, query: HistoryQuery) -> list[Location]:
    folder = root / f"date={date}"
    if query.timeframe is not None:
        folders = [folder / f"timeframe={query.timeframe}"]
    else:
        folders = folder.dirs("timeframe=")
    return [path for sub in folders for path in live_files(sub)]


def _identity(path: Location) -> tuple[str, int, float]:
    found = path.stat()
    return (path.uri, found.size, found.mtime)


def _damaged_in(files: list[Location]) -> list[Location]:
    if not _damaged:
        return []
    found = []
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            if _identity(path) in _damaged:
                found.append(path)
    return found


def _find_damaged(root: Location, date: str, query: HistoryQuery) -> bool:
    """Read each file of the date whole (only after a read failed); remember, and log once,
    those that cannot be read. True if any was found that was not known."""
    new = False
    for path in _files(root, date, query):
        try:
            identity = _identity(path)
        except FileNotFoundError:
            continue
        if identity in _damaged:
            continue
        try:
            pq.read_table(path.path, filesystem=path.fs)
        except FileNotFoundError:
            continue
        except (pa.ArrowInvalid, OSError) as exc:
            _damaged[identity] = str(exc)[:200]
            log.warning("prediction log: %s is damaged (%s); pages leave it out", path, exc)
            new = True
    return new


def _dates(root: Location, query: HistoryQuery, after: tuple | None) -> list[str]:
    """The date partitions that can hold rows of the page, in page order."""
    names = [folder.name[5:] for folder in root.dirs("date=")]
    low = utc_date(query.start_ms) if query.start_ms is not None else None
    high = utc_date(max(query.end_ms - 1, 0)) if query.end_ms is not None else None
    if after is not None:
        cursor_date = utc_date(after[0])
        if query.descending:
            high = min(high, cursor_date) if high else cursor_date
        else:
            low = max(low, cursor_date) if low else cursor_date
    dates = sorted(d for d in names if (low is None or d >= low) and (high is None or d <= high))
    return dates[::-1] if query.descending else dates


def _date_dataset(root: Location, date: str, query: HistoryQuery) -> ds.Dataset | None:
    listed = _files(root, date, query)
    damaged = set(_damaged_in(listed))
    files = [path.path for path in listed if path not in damaged]
    if not files:
        return None
    # The schema is given, not inferred: every file of the log reads as the same columns; the
    # partition columns (date, timeframe) are in the folder names, not in the files.
    return ds.dataset(
        files,
        schema=LOG_SCHEMA,
        format="parquet",
        partitioning=PARTITIONING,
        partition_base_dir=root.path,
        filesystem=root.fs,
    )


def _read_date(root: Location, date: str, query: HistoryQuery, after, need: int) -> pa.Table:
    """The best ``need`` rows of one date for the page, in two passes over its row groups:
    the ordering columns of each row group the filter's statistics do not rule out (three
    narrow columns, trimmed to the best ``need`` as they come), then every column of only the
    row groups holding one of those rows."""
    dataset = _date_dataset(root, date, query)
    if dataset is None:
        return LOG_SCHEMA.empty_table()
    expression = _row_filter(query, after)
    pieces = [
        piece
        for fragment in dataset.get_fragments(filter=expression)
        for piece in fragment.split_by_row_group(filter=expression, schema=LOG_SCHEMA)
    ]
    # Row groups in page order of their time range, so that once ``need`` rows are held a
    # row group wholly after the last of them ends the pass (the newest rows of a day being
    # written sit in its few newest files).
    pieces.sort(key=lambda piece: _time_bound(piece, query.descending), reverse=query.descending)
    read: list[ds.Fragment] = []
    keys: list[pa.Table] = []
    held, last = 0, None
    for piece in pieces:
        if last is not None and _wholly_after(piece, last, query.descending):
            break
        table = piece.to_table(schema=LOG_SCHEMA, columns=list(ORDER_COLUMNS), filter=expression)
        if not table.num_rows:
            continue
        number = np.full(table.num_rows, len(read), dtype=np.int32)
        index = np.arange(table.num_rows, dtype=np.int32)
        keys.append(
            table.append_column(PIECE, pa.array(number)).append_column(ROW, pa.array(index))
        )
        read.append(piece)
        held += table.num_rows
        if held >= need and (last is None or held > 2 * need + TRIM_ROWS):
            keys = [_ordered(keys, query.descending).slice(0, need)]  # only these can be paged
            held, last = need, keys[0].column("open_time")[-1].as_py()
    if not keys:
        return LOG_SCHEMA.empty_table()
    best = _ordered(keys, query.descending).slice(0, need)
    # Whole rows of just those: a row group's filtered rows come in the same order on both
    # passes, so the first pass's row numbers pick them (checked against the keys).
    pieces_of = best.column(PIECE).to_numpy()
    rows_of = best.column(ROW).to_numpy()
    full = []
    for number in np.unique(pieces_of):
        wanted = rows_of[pieces_of == number]
        rows = read[number].to_table(schema=LOG_SCHEMA, filter=expression).take(wanted)
        expected = best.filter(pa.array(pieces_of == number)).select(list(ORDER_COLUMNS))
        if not rows.select(list(ORDER_COLUMNS)).equals(expected):
            raise RuntimeError(f"row group of {date} read differently twice")
        full.append(rows)
    return _ordered(full, query.descending)


def _time_bound(piece: ds.Fragment, descending: bool) -> int:
    """The row group's first open time in page order (unknown: as if first of all)."""
    stats = piece.row_groups[0].statistics.get("open_time") if piece.row_groups else None
    if not stats:
        return 2**63 - 1 if descending else -(2**63)
    return stats["max"] if descending else stats["min"]


def _wholly_after(piece: ds.Fragment, last: int, descending: bool) -> bool:
    """Every row of the row group comes after the last row held (whose time is ``last``)."""
    bound = _time_bound(piece, descending)
    return bound < last if descending else bound > last


def _ordered(tables: list[pa.Table], descending: bool) -> pa.Table:
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    order = "descending" if descending else "ascending"
    return table.sort_by([(column, order) for column in ORDER_COLUMNS])


def _row_filter(query: HistoryQuery, after: tuple | None) -> ds.Expression | None:
    conditions = []
    for column in ("symbol", "model_id"):
        if getattr(query, column) is not None:
            conditions.append(ds.field(column) == getattr(query, column))
    if query.role is None:  # the signals: a challenger's unpublished rows are not (null: old)
        conditions.append(ds.field("published").is_null() | (ds.field("published") == True))  # noqa: E712
    elif query.role == "production":
        conditions.append(ds.field("role").is_null() | (ds.field("role") == "production"))
    else:
        conditions.append(ds.field("role") == query.role)
    if query.start_ms is not None:
        conditions.append(ds.field("open_time") >= query.start_ms)
    if query.end_ms is not None:
        conditions.append(ds.field("open_time") < query.end_ms)
    if after is not None:
        conditions.append(_beyond(after, query.descending))
    return all_of(conditions)


def all_of(conditions: list[ds.Expression]) -> ds.Expression | None:
    """The conjunction of ``conditions`` (None: no condition, every row)."""
    return functools.reduce(operator.and_, conditions) if conditions else None


def _beyond(after: tuple[int, str, str], descending: bool) -> ds.Expression:
    """Rows strictly after the cursor's key in page order; the plain time bound beside the
    exact test lets row-group statistics skip what is wholly before it."""
    open_time, symbol, model_id = after
    t, s, m = ds.field("open_time"), ds.field("symbol"), ds.field("model_id")
    if descending:
        exact = (t < open_time) | (
            (t == open_time) & ((s < symbol) | ((s == symbol) & (m < model_id)))
        )
        return (t <= open_time) & exact
    exact = (t > open_time) | ((t == open_time) & ((s > symbol) | ((s == symbol) & (m > model_id))))
    return (t >= open_time) & exact


def _pylist(table: pa.Table) -> list[dict]:
    rows = table.drop_columns([c for c in ("date",) if c in table.column_names]).to_pylist()
    for row in rows:
        row["outputs"] = dict(row.get("outputs") or [])
    return rows
