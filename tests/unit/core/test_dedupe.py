import os

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.sinks.dedupe import SeenKeys, recent_event_ids, recently_written_event_ids
from orchestrator.sinks.parquet_log import ParquetLog
from tests.unit.core.test_sinks import _predictions


def test_each_key_passes_once_even_within_one_table():
    seen = SeenKeys()
    first = _predictions(60_000)
    assert seen.keep_new(first).num_rows == 2
    assert seen.keep_new(first).num_rows == 0
    doubled = pa.concat_tables([_predictions(120_000), _predictions(120_000)])
    assert seen.keep_new(doubled).num_rows == 2
    assert seen.duplicates == 4


def test_memory_is_bounded_and_keeps_at_least_the_newest_half():
    seen = SeenKeys(capacity=10)
    keys = [f"k{i}" for i in range(57)]
    for key in keys:
        seen.add([key])
        assert len(seen) <= 10
    assert all(k in seen for k in keys[-5:])  # at least capacity / 2 of the newest
    table = pa.table({"event_id": ["k0", "k56"]})
    assert seen.keep_new(table).column("event_id").to_pylist() == ["k0"]  # "k0" was forgotten
    assert seen.duplicates == 1


def test_seeded_from_the_newest_log_partitions(tmp_path):
    log = ParquetLog(tmp_path, flush_rows=1)
    for day in range(3):
        log.append(_predictions(day * 86_400_000))
    ids = recent_event_ids(tmp_path, partitions=2)
    assert len(ids) == 4 and all("|86400000" in i or "|172800000" in i for i in ids)
    assert recent_event_ids(tmp_path / "none") == []


def test_recently_written_ids_are_the_last_stretch_of_writing_whatever_the_dates(tmp_path):
    def write(date: str, ids: list[str], age_s: float) -> None:
        folder = tmp_path / f"date={date}" / "timeframe=1m"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{ids[0]}.parquet"
        pq.write_table(pa.table({"event_id": ids}), path)
        stamp = path.stat().st_mtime - age_s
        os.utime(path, (stamp, stamp))

    write("2026-03-24", ["new-day"], age_s=0)  # the newest file of the log
    write("2026-02-01", ["other-feed"], age_s=30)  # an older date, written just before
    write("2026-02-01", ["long-ago"], age_s=3600)
    recent = recently_written_event_ids(tmp_path, window_s=900)
    assert sorted(recent) == ["new-day", "other-feed"]
    assert recently_written_event_ids(tmp_path, window_s=0) == []
    assert recently_written_event_ids(tmp_path / "absent", window_s=900) == []
