"""A write-ahead log of prediction tables: what the sink has confirmed survives its crash.

On a local folder each record is appended to an Arrow IPC stream segment and flushed to the
OS before the sink answers, so a killed process loses nothing it confirmed (an OS crash
may: segments are not fsynced per record, a deliberate trade of durability for per-tick
latency). On an object store (``s3://…``) an object cannot be appended to: each record is
an object of its own (``segment-<n>-<record>.arrows``), uploaded whole before the sink
answers, so a sink whose node dies loses nothing it confirmed either; it costs one upload
per record (tens of milliseconds) instead of a local write.

When the buffered rows reach the Parquet log, the segment is deleted; on start, leftover
segments are read back (a torn last message ends a segment) and written again.

With ``keep_s``, flushed segments are not deleted but renamed ``flushed-*`` and kept until
``keep_s`` older than the newest of them (by their last write, so a sink started hours
later still finds the last stretch of writing): ``recent()`` is what the sink wrote lately,
whatever candle dates it was for, the memory a restarted sink drops replays by.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from orchestrator.storage import Entry, Location, locate


class WriteAheadLog:
    def __init__(self, directory: Location | Path | str, schema: pa.Schema, keep_s: float = 0.0):
        self.directory = locate(directory)
        self.directory.mkdirs()
        self.schema = schema
        self.keep_s = keep_s
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._sink = None
        self._segment = self._next_segment_number()
        self._records = 0  # records of the current segment (object stores)

    def _entries(self, kind: str) -> list[Entry]:
        return self.directory.files(prefix=f"{kind}-", suffix=".arrows")

    def _next_segment_number(self) -> int:
        numbers = [_segment_of(e) for kind in ("segment", "flushed") for e in self._entries(kind)]
        return max(numbers, default=-1) + 1

    def append(self, table: pa.Table) -> None:
        table = table.cast(self.schema)
        if not self.directory.local:
            name = f"segment-{self._segment:08d}-{self._records:06d}.arrows"
            (self.directory / name).write_bytes(_stream_bytes(table, self.schema))
            self._records += 1
            return
        if self._writer is None:
            path = Path(self.directory.path) / f"segment-{self._segment:08d}.arrows"
            self._sink = path.open("ab")
            self._writer = ipc.new_stream(self._sink, self.schema)
        self._writer.write_table(table)
        self._sink.flush()

    @property
    def segment(self) -> int:
        """The segment the next append goes to."""
        return self._segment

    def rotate(self) -> int:
        """Close the current segment (later appends start a new one); returns its number:
        everything appended so far is in segments up to it (``drop_through``)."""
        self._close()
        closed = self._segment
        self._segment += 1
        self._records = 0
        return closed

    def drop_through(self, segment: int) -> None:
        """Everything in segments up to ``segment`` is durable elsewhere: drop them."""
        for entry in self._entries("segment"):
            if _segment_of(entry) <= segment:
                entry.location.delete()

    def truncate(self) -> None:
        """Everything appended so far is durable elsewhere: drop it (with ``keep_s``: keep it
        a while as the record of recent writes)."""
        self._close()
        for entry in self._entries("segment"):
            if self.keep_s > 0:
                flushed = self.directory / ("flushed-" + entry.name.split("-", 1)[1])
                if self.directory.local:
                    entry.location.atomic_rename(flushed)
                else:  # no rename on an object store: a server-side copy, then the delete
                    self.directory.fs.move(entry.location.path, flushed.path)
            else:
                entry.location.delete()
        self._prune()
        self._segment += 1
        self._records = 0

    def _prune(self) -> None:
        flushed = self._entries("flushed")
        if not flushed:
            return
        newest = max(e.mtime for e in flushed)
        for entry in flushed:
            if entry.mtime < newest - self.keep_s:
                entry.location.delete()

    def recent(self) -> pa.Table:
        """What was flushed in the last ``keep_s`` of writing (``keep_s`` 0: nothing)."""
        return _in_schema(self._batches("flushed"), self.schema)

    def recover(self) -> pa.Table:
        """Every complete record left by a previous process, in order."""
        return _in_schema(self._batches("segment"), self.schema)

    def _batches(self, kind: str) -> list[pa.RecordBatch]:
        batches = []
        for entry in self._entries(kind):
            batches.extend(_complete_batches(entry.location))
        return batches

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None


def _segment_of(entry: Entry) -> int:
    return int(entry.name.split("-")[1].split(".")[0])


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
