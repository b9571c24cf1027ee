import numpy as np
import pyarrow as pa
import pytest

from orchestrator.events import PREDICTION_SCHEMA, ModelOutput, TickRows, build_predictions
from orchestrator.sinks.latest import LatestStore
from orchestrator.sinks.parquet_log import ParquetLog, read_log

DAY_MS = 86_400_000


def _predictions(open_time: int, symbols=("A/USDT", "B/USDT"), values=(0.8, 0.3), version="v1") -> pa.Table:
    n = len(symbols)
    rows = TickRows(np.array(["x"] * n, dtype=object), np.array(symbols, dtype=object), "1m",
                    np.full(n, open_time, dtype=np.int64), emitted_at_ms=1000.0)
    output = ModelOutput("direction-1m", "direction", version, np.array(values))
    return build_predictions(output, rows, now_ms=1012.5, high=0.6, very_high=0.7)


def test_build_predictions_fills_the_schema():
    table = _predictions(60_000)
    assert table.schema == PREDICTION_SCHEMA
    row = table.to_pylist()[0]
    assert row["signal"] == "LONG" and row["confidence"] == "VERY_HIGH"
    assert row["latency_ms"] == 12.5
    assert row["event_id"] == "direction-1m@v1|x|A/USDT|1m|60000"
    assert table.to_pylist()[1]["signal"] == "SHORT"


def test_latest_store_keeps_the_newest_per_key():
    store = LatestStore()
    store.update(_predictions(120_000, values=(0.1, 0.2)))
    store.update(_predictions(60_000, values=(0.9, 0.9)))  # older, arrives late: ignored
    rows = store.rows()
    assert [(r["symbol"], r["open_time"], r["value"]) for r in rows] == [
        ("A/USDT", 120_000, 0.1), ("B/USDT", 120_000, 0.2)]
    assert [r["symbol"] for r in store.rows(symbol="B/USDT")] == ["B/USDT"]
    assert store.rows(timeframe="5m") == []


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
    log.root = tmp_path / "log"
    assert log.flush() == 2
