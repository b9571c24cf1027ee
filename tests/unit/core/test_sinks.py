import time

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.sinks.latest import LatestStore
from orchestrator.sinks.parquet_log import ParquetLog, read_log, utc_dates
from orchestrator.storage import locate
from orchestrator.stream.events import PREDICTION_SCHEMA, ModelOutput, TickRows, build_predictions
from tests.fakes.predictions import direction_predictions

DAY_MS = DAY = 86_400_000


def _predictions(
    open_time: int, symbols=("A/USDT", "B/USDT"), values=(0.8, 0.3), version="v1"
) -> pa.Table:
    return direction_predictions(
        open_time,
        symbols,
        values,
        version=version,
        close=100.0,
        emitted_at_ms=1000.0,
        now_ms=1012.5,
    )


def test_build_predictions_fills_the_schema():
    table = _predictions(60_000)
    assert table.schema == PREDICTION_SCHEMA
    row = table.to_pylist()[0]
    assert row["signal"] == "LONG" and row["confidence"] == "VERY_HIGH"
    assert row["latency_ms"] == 12.5
    assert row["event_id"] == "direction-1m@v1|x|A/USDT|1m|60000"
    assert table.to_pylist()[1]["signal"] == "SHORT"
    assert row["outputs"] == [("prob_up", 0.8)] and row["predicted_price"] is None


def test_return_model_predicts_a_price_and_swing_keeps_every_output():
    rows = TickRows(
        np.array(["x"], dtype=object),
        np.array(["A/USDT"], dtype=object),
        "5m",
        np.array([0]),
        np.array([200.0]),
        emitted_at_ms=0.0,
    )
    ret = ModelOutput.from_response(
        {
            "model_id": "return-5m",
            "model_type": "return",
            "version": "v1",
            "names": ["log_return"],
            "values": np.array([np.log(1.01)]),
        }
    )
    (row,) = build_predictions(ret, rows, 1.0, 0.6, 0.7).to_pylist()
    assert row["predicted_price"] == pytest.approx(202.0) and row["signal"] is None
    swing = ModelOutput.from_response(
        {
            "model_id": "swing-5m",
            "model_type": "swing",
            "version": "v1",
            "names": ["p_swing_high", "p_swing_low"],
            "values": np.array([[0.7, 0.1]]),
        }
    )
    (row,) = build_predictions(swing, rows, 1.0, 0.6, 0.7).to_pylist()
    assert row["value"] == 0.7 and dict(row["outputs"]) == {"p_swing_high": 0.7, "p_swing_low": 0.1}


def test_event_columns_built_from_buffers_hold_every_row():
    """Map keys, constants and ids are built from raw buffers: check them row by row,
    with multi-byte text, against what Python would write."""
    symbols = ("Ä/USDT", "B/USDT", "ÇÇ/USDT")
    rows = TickRows(
        np.array(["kraken"] * 3, dtype=object),
        np.array(symbols, dtype=object),
        "5m",
        np.array([0, 300_000, 600_000]),
        np.full(3, 10.0),
        emitted_at_ms=0.0,
    )
    values = np.array([[0.7, 0.1], [0.2, 0.6], [0.5, 0.5]])
    swing = ModelOutput("swing-5m", "swing", "v2", ("p_swing_high", "p_swing_lów"), values)
    table = build_predictions(swing, rows, 1.0, 0.6, 0.7, environment="ünit")
    table.validate(full=True)
    got = table.to_pylist()
    assert [dict(r["outputs"]) for r in got] == [
        {"p_swing_high": h, "p_swing_lów": low} for h, low in values.tolist()
    ]
    assert [r["event_id"] for r in got] == [
        f"swing-5m@v2|kraken|{s}|5m|{t}"
        for s, t in zip(symbols, (0, 300_000, 600_000), strict=True)
    ]
    assert {
        (r["environment"], r["model_version"], r["timeframe"], r["signal"], r["trend"]) for r in got
    } == {("ünit", "v2", "5m", None, None)}


def test_latest_store_keeps_the_newest_per_key():
    store = LatestStore()
    store.update(_predictions(120_000, values=(0.1, 0.2)))
    store.update(_predictions(60_000, values=(0.9, 0.9)))  # older, arrives late: ignored
    rows = store.rows()
    assert [(r["symbol"], r["open_time"], r["value"]) for r in rows] == [
        ("A/USDT", 120_000, 0.1),
        ("B/USDT", 120_000, 0.2),
    ]
    assert [r["symbol"] for r in store.rows(symbol="B/USDT")] == ["B/USDT"]
    assert store.rows(timeframe="5m") == []


def test_latest_store_forgets_removed_symbols_only_on_their_exchange():
    store = LatestStore()
    store.update(_predictions(60_000))
    exchange = store.rows()[0]["exchange"]
    assert store.forget("elsewhere", ["A/USDT"]) == 0 and len(store) == 2
    assert store.forget(exchange, ["A/USDT", "C/USDT"]) == 1
    assert [r["symbol"] for r in store.rows()] == ["B/USDT"]
    store.update(_predictions(120_000, symbols=("A/USDT",), values=(0.5,)))  # added again
    assert [(r["symbol"], r["open_time"]) for r in store.rows()] == [
        ("A/USDT", 120_000),
        ("B/USDT", 60_000),
    ]


def test_prediction_log_round_trip_partitioned_by_date(tmp_path):
    log = ParquetLog(tmp_path, flush_rows=3)
    log.append(_predictions(0))
    assert log.rows_written == 0  # buffered below flush_rows
    log.append(_predictions(DAY_MS))  # 4 rows pending now -> flushed
    assert log.rows_written == 4
    log.append(_predictions(DAY_MS + 60_000))
    assert log.flush() == 2
    table = read_log(tmp_path)
    assert table.num_rows == 6
    assert sorted(set(table.column("date").to_pylist())) == ["1970-01-01", "1970-01-02"]
    assert {p.name for p in tmp_path.iterdir()} == {"date=1970-01-01", "date=1970-01-02"}


def test_failed_flush_keeps_rows(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    log = ParquetLog(blocker / "log", flush_rows=100)
    log.append(_predictions(0))
    with pytest.raises(OSError):
        log.flush()
    log.root = locate(tmp_path / "log")
    assert log.flush() == 2


def test_latest_store_tail_streams_everything_after_a_cursor():
    store = LatestStore(tail=3)
    assert store.since(0) == (0, [], False)
    store.update(_predictions(60_000))  # 2 rows: cursor 2
    cursor, rows, lost = store.since(0)
    assert (cursor, [r["symbol"] for r in rows], lost) == (2, ["A/USDT", "B/USDT"], False)
    assert store.since(cursor) == (2, [], False)
    store.update(_predictions(120_000))  # cursor 4
    cursor2, rows, lost = store.since(cursor)
    assert cursor2 == 4 and [r["open_time"] for r in rows] == [120_000, 120_000] and not lost
    store.update(_predictions(180_000))  # cursor 6: rows 3..6 fill the tail, rows 1..2 go
    cursor3, rows, lost = store.since(0)
    assert lost and cursor3 == 6 and [r["open_time"] for r in rows] == [120_000] * 2 + [180_000] * 2
    assert store.since(0, limit=1)[:2] == (3, [rows[0]])  # the caller is told, and pages on


def test_query_log_filters_and_pages(tmp_path):
    from orchestrator.sinks.history import HistoryQuery, query_log

    log = ParquetLog(tmp_path, flush_rows=1)
    for minute in range(5):
        log.append(_predictions(minute * 60_000))
    query = HistoryQuery(symbol="B/USDT", start_ms=60_000, limit=2, count=True)
    page = query_log(tmp_path, query)
    assert page.total == 4 and [r["open_time"] for r in page.rows] == [60_000, 120_000]
    page = query_log(tmp_path, HistoryQuery(symbol="B/USDT", start_ms=60_000, limit=2, offset=2))
    assert [r["open_time"] for r in page.rows] == [180_000, 240_000]
    assert page.rows[0]["outputs"] == {"prob_up": 0.3} and page.next_cursor is None
    assert query_log(tmp_path, HistoryQuery(timeframe="1h", count=True)).total == 0
    assert query_log(tmp_path / "missing", HistoryQuery()).rows == []


def test_latest_store_takes_each_keys_newest_row_from_a_multi_minute_table():
    store = LatestStore()
    store.update(_predictions(180_000, values=(0.9, 0.1)))
    batch = pa.concat_tables(
        [
            _predictions(120_000),
            _predictions(240_000, values=(0.6, 0.4)),
            _predictions(60_000, values=(0.2, 0.2)),
        ]
    )  # out of order on purpose
    store.update(batch)
    assert {r["symbol"]: (r["open_time"], r["value"]) for r in store.rows()} == {
        "A/USDT": (240_000, 0.6),
        "B/USDT": (240_000, 0.4),
    }
    store.update(
        pa.concat_tables(
            [_predictions(240_000, values=(0.5, 0.5)), _predictions(240_000, values=(0.7, 0.3))]
        )
    )
    assert [r["value"] for r in store.rows()] == [0.7, 0.3]  # a tie: the later row wins


def test_utc_dates_equal_per_row_formatting():
    times = pa.array([0, DAY_MS - 1, DAY_MS, 1_700_000_000_000, -1, 1_700_000_000_000], pa.int64())
    expected = [time.strftime("%Y-%m-%d", time.gmtime(t // 1000)) for t in times.to_pylist()]
    assert utc_dates(times).to_pylist() == expected


def test_a_reader_never_sees_a_file_being_written(tmp_path):
    log = ParquetLog(tmp_path, flush_rows=10**6)
    log.append(_predictions(60_000))
    log.flush()
    assert not list(tmp_path.glob("_staging-*"))  # staged files were moved into place
    half = tmp_path / "_staging-crashed" / "date=1970-01-01" / "timeframe=1m" / "part-x-0.parquet"
    half.parent.mkdir(parents=True)
    half.write_bytes(b"PAR1 torn")  # what a flush killed mid-write leaves behind
    assert read_log(tmp_path).num_rows == 2
    assert log.remove_torn_flushes() == 1 and not list(tmp_path.glob("_staging-*"))
    assert read_log(tmp_path).num_rows == 2


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, None),
        (DAY - 60_000, None),
        (None, DAY),
        (DAY, 2 * DAY),
        (DAY - 1, DAY + 1),
        (DAY + 60_000, 3 * DAY - 60_000),
        (5 * DAY, None),
    ],
)
def test_a_time_range_prunes_day_partitions_and_keeps_every_row_in_range(tmp_path, start, end):
    from orchestrator.sinks.history import HistoryQuery, query_log

    log = ParquetLog(tmp_path)
    times = [
        d * DAY + m * 60_000 for d in range(3) for m in (-1, 0, 1) if d * DAY + m * 60_000 >= 0
    ]
    for t in times:
        log.append(direction_predictions(t, ["A/USDT"]))
    log.flush()
    page = query_log(tmp_path, HistoryQuery(start_ms=start, end_ms=end, limit=100, count=True))
    want = [t for t in times if (start is None or t >= start) and (end is None or t < end)]
    assert [r["open_time"] for r in page.rows] == want and page.total == len(want)
