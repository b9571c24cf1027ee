"""A write-ahead log of prediction tables: what the sink has confirmed survives its crash.

On a local folder each record is appended to an Arrow IPC stream segment
(``segment-<n>.arrows``) and flushed to the OS before the sink answers, so a killed process
loses nothing it confirmed (an OS crash may: segments are not fsynced per record, a
deliberate trade of durability for per-tick latency). An object store (``s3://…``) has no
appends: each record is an object of its own (``segment-<n>/<record>.arrows``), uploaded
whole (one PUT) before the sink answers, so a sink whose node dies with its disk loses
nothing it confirmed either.

When the buffered rows reach the Parquet log, the segments are dropped; on start, leftover
segments are read back (a torn last message ends a segment) and written again. Nothing is
kept after a flush: what the sink wrote lately is in the log's newest files
(``dedupe.recently_written_event_ids``), so the WAL holds only what the log does not, a few
seconds of rows even in a replay at full speed.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from orchestrator.storage import Entry, Location, locate


class WriteAheadLog:
    def __init__(self, directory: Location | Path | str, schema: pa.Schema):
        self.directory = locate(directory)
        self.directory.mkdirs()
        self.schema = schema
        self._store = (_LocalSegments if self.directory.local else _ObjectSegments)(
            self.directory, schema
        )
        self._segment = self._store.next_segment()

    def append(self, table: pa.Table) -> None:
        self._store.append(self._segment, table.cast(self.schema))

    @property
    def segment(self) -> int:
        """The segment the next append goes to."""
        return self._segment

    def rotate(self) -> int:
        """Close the current segment (later appends start a new one); returns its number:
        everything appended so far is in segments up to it (``drop_through``)."""
        self._store.close()
        closed = self._segment
        self._segment += 1
        return closed

    def drop_through(self, segment: int) -> None:
        """Everything in segments up to ``segment`` is durable elsewhere: drop them."""
        self._store.drop_through(segment)

    def truncate(self) -> None:
        """Everything appended so far is durable elsewhere: drop it."""
        self._store.close()
        self._store.drop_through(self._segment)
        self._segment += 1

    def recover(self) -> pa.Table:
        """Every complete record left by a previous process, in order."""
        return _in_schema(self._store.batches(), self.schema)


class _LocalSegments:
    """``segment-<n>.arrows`` streams appended in place."""

    def __init__(self, directory: Location, schema: pa.Schema):
        self.directory, self.schema = directory, schema
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._sink = None
        for entry in self.directory.files(prefix="flushed-", suffix=".arrows"):
            entry.location.delete()  # what an earlier build kept after flushing it

    def _entries(self) -> list[Entry]:
        return self.directory.files(prefix="segment-", suffix=".arrows")

    def next_segment(self) -> int:
        return max((_number(e.name) for e in self._entries()), default=-1) + 1

    def append(self, segment: int, table: pa.Table) -> None:
        if self._writer is None:
            path = Path(self.directory.path) / f"segment-{segment:08d}.arrows"
            self._sink = path.open("ab")
            self._writer = ipc.new_stream(self._sink, self.schema)
        self._writer.write_table(table)
        self._sink.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def drop_through(self, segment: int) -> None:
        for entry in self._entries():
            if _number(entry.name) <= segment:
                entry.location.delete()

    def batches(self) -> list[pa.RecordBatch]:
        return [b for e in self._entries() for b in _complete_batches(e.location)]


class _ObjectSegments:
    """``segment-<n>/<record>.arrows`` objects, one upload each; dropped by whole segment
    folders."""

    def __init__(self, directory: Location, schema: pa.Schema):
        self.directory, self.schema = directory, schema
        self._records = 0
        self._open_segment = -1
        marker = self.directory / "flushed-through"  # an earlier build's: segments it
        if marker.exists():  # kept after flushing them, never to be recovered
            self.drop_through(int(marker.read_text()))
            marker.delete()

    def _segments(self) -> dict[int, list[Entry]]:
        """Every segment's records (one listing), by segment number."""
        found: dict[int, list[Entry]] = defaultdict(list)
        for entry in self.directory.files(suffix=".arrows", recursive=True):
            folder = entry.location.parent.name
            if folder.startswith("segment-"):
                found[_number(folder)].append(entry)
        return found

    def next_segment(self) -> int:
        return max(self._segments(), default=-1) + 1

    def append(self, segment: int, table: pa.Table) -> None:
        if segment != self._open_segment:
            self._open_segment, self._records = segment, 0
        where = self.directory / f"segment-{segment:08d}" / f"{self._records:06d}.arrows"
        where.write_bytes(_stream_bytes(table, self.schema))
        self._records += 1

    def close(self) -> None:
        return None

    def drop_through(self, segment: int) -> None:
        for number in self._segments():
            if number <= segment:
                (self.directory / f"segment-{number:08d}").delete_tree()

    def batches(self) -> list[pa.RecordBatch]:
        batches = []
        for _, entries in sorted(self._segments().items()):
            for entry in entries:  # sorted by name: in the order appended
                batches.extend(_complete_batches(entry.location))
        return batches


def _number(name: str) -> int:
    return int(name.split("-")[1].split(".")[0])


def _stream_bytes(table: pa.Table, schema: pa.Schema) -> bytes:
    out = pa.BufferOutputStream()
    with ipc.new_stream(out, schema) as writer:
        writer.write_table(table)
    return out.getvalue().to_pybytes()


def _complete_batches(where: Location) -> list[pa.RecordBatch]:
    batches = []
    try:
        source = pa.memory_map(where.path) if where.local else pa.BufferReader(where.read_bytes())
        with ipc.open_stream(source) as reader:
            for batch in reader:
                batches.append(batch)
    except (pa.ArrowInvalid, OSError):  # a torn tail: the record was never confirmed
        pass
    return batches


def _in_schema(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    """Batches as one table of ``schema``: a batch written by an older version, before a
    (nullable) column was added, gets that column as nulls, so an upgrade recovers the WAL
    the previous version left."""
    tables = []
    for batch in batches:
        if batch.schema.equals(schema):
            tables.append(pa.Table.from_batches([batch]))
            continue
        names = set(batch.schema.names)
        columns = [
            batch.column(f.name) if f.name in names else pa.nulls(batch.num_rows, f.type)
            for f in schema
        ]
        tables.append(pa.Table.from_arrays(columns, schema=schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()
