import os

import pyarrow as pa

from orchestrator.sinks.wal import WriteAheadLog

SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.string())])


def _table(*keys):
    return pa.table({"k": list(keys), "v": [str(k) for k in keys]}, schema=SCHEMA)


def test_records_survive_a_new_process_until_truncated(tmp_path):
    wal = WriteAheadLog(tmp_path, SCHEMA)
    wal.append(_table(1, 2))
    wal.append(_table(3))
    # A new WriteAheadLog is what a restarted sink sees (the old one was never closed).
    assert WriteAheadLog(tmp_path, SCHEMA).recover().column("k").to_pylist() == [1, 2, 3]
    wal.truncate()
    wal.append(_table(4))
    assert WriteAheadLog(tmp_path, SCHEMA).recover().column("k").to_pylist() == [4]


def test_a_torn_last_record_is_dropped_not_fatal(tmp_path):
    wal = WriteAheadLog(tmp_path, SCHEMA)
    wal.append(_table(1))
    wal.append(_table(2))
    (segment,) = tmp_path.glob("segment-*.arrows")
    data = segment.read_bytes()
    segment.write_bytes(data[:-20])  # the process died in the middle of a write
    assert WriteAheadLog(tmp_path, SCHEMA).recover().column("k").to_pylist() == [1]


def test_empty_directory_recovers_nothing(tmp_path):
    assert WriteAheadLog(tmp_path / "new", SCHEMA).recover().num_rows == 0


def test_flushed_segments_are_kept_for_a_while_as_the_record_of_recent_writes(tmp_path):
    wal = WriteAheadLog(tmp_path, SCHEMA, keep_s=60.0)
    wal.append(_table(1))
    wal.truncate()  # flushed: not recovered, but remembered
    old = next(tmp_path.glob("flushed-*.arrows"))
    os.utime(old, (old.stat().st_mtime - 120, old.stat().st_mtime - 120))  # 2 minutes older
    wal.append(_table(2))
    wal.truncate()
    wal.append(_table(3))
    wal.truncate()  # prunes what is more than 60 s older than the newest
    again = WriteAheadLog(tmp_path, SCHEMA, keep_s=60.0)
    assert again.recover().num_rows == 0
    assert again.recent().column("k").to_pylist() == [2, 3]
    again.append(_table(4))  # numbering continues after the kept segments: nothing replaced
    again.truncate()
    assert again.recent().column("k").to_pylist() == [2, 3, 4]
    assert WriteAheadLog(tmp_path / "plain", SCHEMA).recent().num_rows == 0


def test_a_wal_written_before_a_column_was_added_recovers_with_it_as_nulls(tmp_path):
    """An upgrade: the previous version's sink left records without the new column."""
    old = WriteAheadLog(tmp_path, SCHEMA, keep_s=60)
    old.append(_table(1, 2))
    old.truncate()  # kept a while as the record of recent writes
    old.append(_table(3))
    newer = SCHEMA.append(pa.field("role", pa.string()))
    wal = WriteAheadLog(tmp_path, newer, keep_s=60)
    recovered = wal.recover()
    assert recovered.schema == newer and recovered.column("k").to_pylist() == [3]
    assert recovered.column("role").to_pylist() == [None]
    assert wal.recent().column("k").to_pylist() == [1, 2]
    wal.append(pa.table({"k": [4], "v": ["4"], "role": ["shadow"]}, schema=newer))
    assert WriteAheadLog(tmp_path, newer).recover().column("role").to_pylist() == [None, "shadow"]
