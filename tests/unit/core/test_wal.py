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
