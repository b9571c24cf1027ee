"""The storage layer and the checkpoints on it, on a local folder and on an S3 server."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.storage import locate, write_parquet
from orchestrator.stream.checkpoint import load_checkpoint, save_checkpoint


def test_a_checkpoint_round_trips_and_a_missing_one_is_none(storage_root):
    where = locate(storage_root) / "prod" / "shard-0-of-2.pkl"
    assert load_checkpoint(where) is None
    save_checkpoint(where, {"seq": {"feed-a": 7}, "state": [1.5, "x"]})
    save_checkpoint(where, {"seq": {"feed-a": 9}, "state": [2.5, "y"]})  # replaced whole
    assert load_checkpoint(f"{storage_root}/prod/shard-0-of-2.pkl") == {
        "seq": {"feed-a": 9},
        "state": [2.5, "y"],
    }
    names = [e.name for e in (locate(storage_root) / "prod").files()]
    assert names == ["shard-0-of-2.pkl"]  # no temporary file left beside it


def test_files_and_folders_are_listed_by_name_and_removed(storage_root):
    root = locate(storage_root)
    for name in ("date=2026-01-01/a.parquet", "date=2026-01-02/b.parquet", "date=2026-01-02/c.txt"):
        (root / name).write_bytes(b"x" * 3)
    assert [d.name for d in root.dirs("date=")] == ["date=2026-01-01", "date=2026-01-02"]
    day = root / "date=2026-01-02"
    assert [e.name for e in day.files(suffix=".parquet")] == ["b.parquet"]
    assert [e.size for e in day.files()] == [3, 3] and all(e.mtime > 0 for e in day.files())
    assert len(root.files(recursive=True)) == 3 and root.files() == []
    (day / "b.parquet").delete()
    (day / "b.parquet").delete()  # already gone: nothing to do
    assert [e.name for e in day.files()] == ["c.txt"]
    root.delete_tree()
    assert root.files(recursive=True) == [] and root.dirs() == []
    with pytest.raises(FileNotFoundError):
        (root / "missing").read_bytes()
    with pytest.raises(FileNotFoundError):
        (root / "missing").stat()


def test_a_parquet_file_is_published_whole(storage_root):
    where = locate(storage_root) / "t" / "rows.parquet"
    write_parquet(pa.table({"x": [1, 2, 3]}), where)
    write_parquet(pa.table({"x": [4]}), where)
    assert pq.read_table(where.path, filesystem=where.fs).column("x").to_pylist() == [4]
    assert [e.name for e in where.parent.files()] == ["rows.parquet"]


def test_configured_locations_resolve_as_configs_mean_them(tmp_path):
    assert locate("var/x").path == str(PROJECT_ROOT / "var" / "x")  # relative: the repository
    assert locate(Path("var/x")).path == str(Path.cwd() / "var" / "x")  # a Path: the cwd
    assert locate(f"file://{tmp_path}/y").path == f"{tmp_path}/y" and locate("var").local
    sibling = locate(f"{tmp_path}/predictions").sibling("wal")
    assert sibling.path == f"{tmp_path}/predictions-wal"
    with pytest.raises(ValueError, match="no filesystem for nosuchscheme://"):
        locate("nosuchscheme://bucket/prefix")


def test_an_s3_location_names_its_uri(s3_server, monkeypatch):
    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    where = locate("s3://tickcast/some/prefix/") / "state"
    assert not where.local and where.uri == "s3://tickcast/some/prefix/state"
    assert str(where.sibling("wal")) == "s3://tickcast/some/prefix/state-wal"
    with pytest.raises(ValueError, match="not on the local disk"):
        where.local_path()
