"""The sink's write-ahead log, on a local folder and on an S3 server (``storage_root``)."""

import pyarrow as pa

from orchestrator.sinks.wal import WriteAheadLog
from orchestrator.storage import locate

SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.string())])


def _table(*keys):
    return pa.table({"k": list(keys), "v": [str(k) for k in keys]}, schema=SCHEMA)


def test_records_survive_a_new_process_until_truncated(storage_root):
    wal = WriteAheadLog(storage_root, SCHEMA)
    wal.append(_table(1, 2))
    wal.append(_table(3))
    # A new WriteAheadLog is what a restarted sink sees (the old one was never closed).
    assert WriteAheadLog(storage_root, SCHEMA).recover().column("k").to_pylist() == [1, 2, 3]
    wal.truncate()
    wal.append(_table(4))
    assert WriteAheadLog(storage_root, SCHEMA).recover().column("k").to_pylist() == [4]


def test_rotated_segments_are_dropped_through_their_number(storage_root):
    wal = WriteAheadLog(storage_root, SCHEMA)
    wal.append(_table(1))
    first = wal.rotate()
    wal.append(_table(2))
    wal.drop_through(first)
    assert WriteAheadLog(storage_root, SCHEMA).recover().column("k").to_pylist() == [2]


def test_a_torn_last_record_is_dropped_not_fatal(storage_root):
    wal = WriteAheadLog(storage_root, SCHEMA)
    wal.append(_table(1))
    wal.append(_table(2))
    last = locate(storage_root).files(suffix=".arrows", recursive=True)[-1].location
    data = last.read_bytes()
    last.write_bytes(data[:-20])  # the process died in the middle of a write
    assert WriteAheadLog(storage_root, SCHEMA).recover().column("k").to_pylist() == [1]


def test_empty_directory_recovers_nothing(storage_root):
    assert WriteAheadLog(f"{storage_root}/new", SCHEMA).recover().num_rows == 0


def test_what_an_earlier_build_kept_after_a_flush_is_dropped_not_recovered(storage_root):
    """Builds before 2026-12-04 kept flushed segments a while: locally renamed
    ``flushed-<n>.arrows``, on an object store named by a ``flushed-through`` marker."""
    wal = WriteAheadLog(storage_root, SCHEMA)
    wal.append(_table(1))
    flushed = wal.rotate()
    wal.append(_table(2))
    root = locate(storage_root)
    if root.local:
        (root / f"segment-{flushed:08d}.arrows").atomic_rename(
            root / f"flushed-{flushed:08d}.arrows"
        )
    else:
        (root / "flushed-through").write_text(str(flushed))
    assert WriteAheadLog(storage_root, SCHEMA).recover().column("k").to_pylist() == [2]
    assert not [e for e in root.files(recursive=True) if e.name.startswith("flushed")]
    assert WriteAheadLog(storage_root, SCHEMA).recover().column("k").to_pylist() == [2]


def test_a_wal_written_before_a_column_was_added_recovers_with_it_as_nulls(storage_root):
    """An upgrade: the previous version's sink left records without the new column."""
    old = WriteAheadLog(storage_root, SCHEMA)
    old.append(_table(1, 2))
    old.truncate()  # flushed: gone
    old.append(_table(3))
    newer = SCHEMA.append(pa.field("role", pa.string()))
    wal = WriteAheadLog(storage_root, newer)
    recovered = wal.recover()
    assert recovered.schema == newer and recovered.column("k").to_pylist() == [3]
    assert recovered.column("role").to_pylist() == [None]
    wal.append(pa.table({"k": [4], "v": ["4"], "role": ["shadow"]}, schema=newer))
    recovered = WriteAheadLog(storage_root, newer).recover()
    assert recovered.column("role").to_pylist() == [None, "shadow"]
