"""Pages of the prediction log and its compaction: every page equals the same page cut from
the whole log read and sorted (the reference), before, during and after compaction; each on
a local folder and on an S3 server (``storage_root``)."""

import random
import time

import pyarrow.parquet as pq
import pytest

from orchestrator.bench.history import prediction_rows
from orchestrator.sinks.compaction import Compactor, live_files, partition_folders
from orchestrator.sinks.history import BadCursor, HistoryQuery, query_log
from orchestrator.sinks.parquet_log import ParquetLog, read_log
from orchestrator.storage import locate

DAY = 86_400_000
HOUR = 3_600_000
SYMBOLS = ["A/USDT", "B/USDT", "C/USDT", "D/USDT"]
KEY = ("open_time", "symbol", "model_id")


@pytest.fixture
def log_root(storage_root):
    """Three and a half days of 1h and 4h predictions of two models, written as the sink
    writes (a file per small flush), so each date partition holds several files."""
    log = ParquetLog(f"{storage_root}/log", flush_rows=40)
    for timeframe, step in (("1h", HOUR), ("4h", 4 * HOUR)):
        for start in range(0, 3 * DAY + 12 * HOUR, step):
            log.append(prediction_rows([start], SYMBOLS, timeframe, ("direction", "volatility")))
    log.flush()
    return log.root


def _many(root, n: int) -> int:
    """``n`` cases locally, a quarter of them on S3 (every request a round trip)."""
    return n if root.local else max(2, n // 4)


def _folders(root, timeframe: str = "") -> list:
    return [f for f in partition_folders(root) if f.name.endswith(timeframe)]


def _reference(root, query: HistoryQuery) -> list[tuple]:
    table = read_log(root)
    rows = [r for r in table.to_pylist() if _matches(r, query)]
    rows.sort(key=lambda r: tuple(r[k] for k in KEY), reverse=query.descending)
    return [tuple(r[k] for k in (*KEY, "timeframe")) for r in rows]


def _matches(row: dict, q: HistoryQuery) -> bool:
    return (
        all(getattr(q, c) is None or row[c] == getattr(q, c) for c in ("symbol", "timeframe"))
        and (q.model_id is None or row["model_id"] == q.model_id)
        and (q.start_ms is None or row["open_time"] >= q.start_ms)
        and (q.end_ms is None or row["open_time"] < q.end_ms)
    )


def _walk(root, query: HistoryQuery) -> tuple[list[tuple], int]:
    """Every page by cursor: (rows, pages)."""
    rows, pages, cursor = [], 0, None
    while True:
        page = query_log(root, HistoryQuery(**{**query.__dict__, "cursor": cursor}))
        rows += [tuple(r[k] for k in (*KEY, "timeframe")) for r in page.rows]
        pages += 1
        assert len(page.rows) <= query.limit
        if page.next_cursor is None:
            return rows, pages
        cursor = page.next_cursor


def _random_queries(seed: int, n: int) -> list[HistoryQuery]:
    rng = random.Random(seed)
    queries = []
    for _ in range(n):
        start = rng.choice([None, rng.randrange(0, 4 * DAY, HOUR)])
        end = rng.choice([None, (start or 0) + rng.randrange(1, 3 * DAY)])
        queries.append(
            HistoryQuery(
                symbol=rng.choice([None, *SYMBOLS]),
                timeframe=rng.choice([None, "1h", "4h"]),
                model_id=rng.choice([None, "direction-1h", "volatility-4h"]),
                start_ms=start,
                end_ms=end,
                limit=rng.choice([5, 16, 200]),
                descending=rng.random() < 0.5,
            )
        )
    return queries


def _check_pages_equal_reference(root, queries) -> None:
    for query in queries:
        want = _reference(root, query)
        rows, _ = _walk(root, query)
        assert rows == want, query
        first = query_log(root, HistoryQuery(**{**query.__dict__, "count": True}))
        assert first.total == len(want)
        offset = query_log(root, HistoryQuery(**{**query.__dict__, "offset": 3}))
        assert [r["open_time"] for r in offset.rows] == [r[0] for r in want[3 : 3 + query.limit]]


def test_every_page_by_cursor_equals_the_sorted_whole_log(log_root):
    assert max(len(live_files(f)) for f in _folders(log_root)) > 3  # many small files
    _check_pages_equal_reference(log_root, _random_queries(1, _many(log_root, 16)))


def test_pages_are_the_same_after_compaction_and_the_files_few(log_root):
    before = read_log(log_root).num_rows
    compactor = Compactor(log_root, fanout=3, band_rows=50)
    compactor.run()  # every folder still "open": merged by levels only
    assert read_log(log_root).num_rows == before
    assert max(len(live_files(f)) for f in _folders(log_root)) < 3 * 2
    _check_pages_equal_reference(log_root, _random_queries(2, _many(log_root, 8)))
    compactor.run(now_s=time.time() + 7200)  # closed: one file per folder
    assert {len(live_files(f)) for f in _folders(log_root)} == {1}
    assert read_log(log_root).num_rows == before
    _check_pages_equal_reference(log_root, _random_queries(3, _many(log_root, 8)))
    merged = live_files(_folders(log_root, "=1h")[0])[0]
    symbols = pq.read_table(merged.path, filesystem=merged.fs).column("symbol").to_pylist()
    assert symbols == sorted(symbols)  # symbol-major: a symbol's rows in few row groups


def test_a_page_of_the_newest_rows_opens_only_the_newest_day(log_root):
    page = query_log(log_root, HistoryQuery(symbol="B/USDT", limit=10, descending=True))
    assert page.dates_read == 1 and page.rows[0]["open_time"] == 3 * DAY + 11 * HOUR
    page = query_log(log_root, HistoryQuery(symbol="B/USDT", timeframe="4h", limit=12))
    assert page.dates_read == 2  # 4h: 6 candles a day (x2 models) for 13 rows (12 + is there more?)
    assert query_log(log_root, HistoryQuery(limit=10, count=True)).dates_read == 1


def test_the_log_stays_at_a_bounded_number_of_files_as_it_grows(storage_root):
    log = ParquetLog(storage_root, flush_rows=1)
    compactor = Compactor(storage_root, fanout=4)
    counts, minutes = [], _many(locate(storage_root), 300)
    for minute in range(minutes):
        log.append(prediction_rows([minute * 60_000], ["A/USDT"], "1m", ("direction",)))
        if minute % 10 == 9:
            compactor.run()
            counts.append(len(live_files(f"{storage_root}/date=1970-01-01/timeframe=1m")))
    assert max(counts) <= 3 * 4  # at most fanout - 1 files of each of three levels
    times = read_log(storage_root).column("open_time").to_pylist()
    assert sorted(times) == [m * 60_000 for m in range(minutes)]  # each row once


def test_a_crash_between_publish_and_delete_shows_no_row_twice(log_root):
    folder = _folders(log_root, "=1h")[0]
    saved = {e.name: e.location.read_bytes() for e in folder.files(suffix=".parquet")}
    rows = read_log(log_root).num_rows
    Compactor(log_root, fanout=2).run(now_s=time.time() + 7200)
    for name, data in saved.items():  # the sources back: as if the process died before deleting
        (folder / name).write_bytes(data)
    assert len(folder.files(suffix=".parquet")) > 1
    assert read_log(log_root).num_rows == rows  # the merged file names them: skipped
    query = HistoryQuery(timeframe="1h", limit=10_000)
    assert len(query_log(log_root, query).rows) == len(_reference(log_root, query))
    compactor = Compactor(log_root, fanout=2)
    compactor.run()
    assert compactor.stats.leftovers_removed == len(saved)
    assert len(folder.files(suffix=".parquet")) == 1


def test_a_cursor_from_elsewhere_is_refused(log_root):
    page = query_log(log_root, HistoryQuery(limit=2))
    with pytest.raises(BadCursor, match="other order"):
        query_log(log_root, HistoryQuery(limit=2, cursor=page.next_cursor, descending=True))
    with pytest.raises(BadCursor, match="not one this API handed out"):
        query_log(log_root, HistoryQuery(cursor="bm90IGpzb24"))


def test_a_missing_log_is_an_empty_page(storage_root):
    page = query_log(f"{storage_root}/missing", HistoryQuery(count=True))
    assert (page.rows, page.next_cursor, page.total) == ([], None, 0)


def test_a_broken_file_stops_the_merge_of_its_folder_only(log_root):
    folders = _folders(log_root, "=1h")
    (folders[0] / "part-broken-0.parquet").write_bytes(b"PAR1 not parquet")
    compactor = Compactor(log_root, fanout=2)
    compactor.run(now_s=time.time() + 7200)
    where = f"{folders[0].name} of {folders[0].parent.name}: "
    assert str(compactor.stats.last_error).startswith(where)
    assert len(live_files(folders[0])) > 1  # left as it was, readable file by file
    assert all(len(live_files(f)) == 1 for f in folders[1:])  # the others merged


def test_a_damaged_file_is_left_out_of_pages_and_named_once(log_root, caplog):
    """A file that cannot be read (truncated by a full disk, say) costs its own rows only:
    pages answer from the others, say how many files they skipped, and the log names it once."""
    query = HistoryQuery(limit=10_000, descending=True)
    whole = query_log(log_root, query).rows
    folder = _folders(log_root, "=1h")[-1]
    victim = live_files(folder)[0]
    lost = {(r["open_time"], r["symbol"], r["model_id"]) for r in read_log(log_root).to_pylist()}
    victim.write_bytes(victim.read_bytes()[:100])  # torn: no footer
    kept = {(r["open_time"], r["symbol"], r["model_id"]) for r in read_log_without(victim)}
    with caplog.at_level("WARNING", logger="orchestrator.sinks.history"):
        first = query_log(log_root, query)
        again = query_log(log_root, query)
    assert first.skipped_files == again.skipped_files == 1
    assert {(r["open_time"], r["symbol"], r["model_id"]) for r in first.rows} == kept
    assert len(first.rows) < len(whole) and len(lost) == len(whole)
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert str(victim) in caplog.records[0].message
    assert query_log(log_root, HistoryQuery(limit=5)).skipped_files == 0  # oldest day: intact


def read_log_without(damaged) -> list[dict]:
    root = damaged.parent.parent.parent
    rows = []
    for folder in partition_folders(root):
        for path in live_files(folder):
            if path != damaged:
                rows += pq.read_table(path.path, filesystem=path.fs).to_pylist()
    return rows
