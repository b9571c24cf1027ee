import pyarrow as pa

from orchestrator.sinks.dedupe import SeenKeys, recent_event_ids
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


def test_memory_is_bounded_to_the_newest_keys():
    seen = SeenKeys(capacity=3)
    seen.add(["a", "b", "c", "d"])
    assert len(seen) == 3
    table = pa.table({"event_id": ["a", "d"]})
    assert seen.keep_new(table).column("event_id").to_pylist() == ["a"]  # "a" was forgotten


def test_seeded_from_the_newest_log_partitions(tmp_path):
    log = ParquetLog(tmp_path, flush_rows=1)
    for day in range(3):
        log.append(_predictions(day * 86_400_000))
    ids = recent_event_ids(tmp_path, partitions=2)
    assert len(ids) == 4 and all("|86400000" in i or "|172800000" in i for i in ids)
    assert recent_event_ids(tmp_path / "none") == []
