"""A write-ahead log of prediction tables: what the sink has confirmed survives its crash.

On a local folder each record is appended to an Arrow IPC stream segment
(``segment-<n>.arrows``) and flushed to the OS before the sink answers, so a killed process
loses nothing it confirmed (an OS crash may: segments are not fsynced per record, a
deliberate trade of durability for per-tick latency). An object store (``s3://…``) has no
appends: each record is an object of its own (``segment-<n>/<record>.arrows``), uploaded
whole (one PUT) before the sink answers, so a sink whose node dies with its disk loses
nothing it confirmed either.

When the buffered rows reach the Parquet log, the segments are dropped; on start, leftover
segments are read back (a torn last message ends a segment) and written again.

With ``keep_s``, flushed segments are kept until ``keep_s`` older than the newest of them
(by their last write, so a sink started hours later still finds the last stretch of
writing): ``recent()`` is what the sink wrote lately, whatever candle dates it was for, the
memory a restarted sink drops replays by. Locally a flushed segment is renamed
``flushed-<n>.arrows``; on an object store, where a rename is a copy per record, one small
object ``flushed-through`` names the last flushed segment instead.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from orchestrator.storage import Entry, Location, locate

MARKER = "flushed-through"


class WriteAheadLog:
    def __init__(self, directory: Location | Path | str, schema: pa.Schema, keep_s: float = 0.0):
        self.directory = locate(directory)
        self.directory.mkdirs()
        self.schema = schema
        self.keep_s = keep_s
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
        """Everything appended so far is durable elsewhere: drop it (with ``keep_s``: keep it
        a while as the record of recent writes)."""
        self._store.close()
        if self.keep_s > 0:
            self._store.mark_flushed(self._segment)
            self._store.prune(self.keep_s)
        else:
            self._store.drop_through(self._segment)
        self._segment += 1

    def recent(self) -> pa.Table:
        """What was flushed in the last ``keep_s`` of writing (``keep_s`` 0: nothing)."""
        return _in_schema(self._store.batches(flushed=True), self.schema)

    def recover(self) -> pa.Table:
        """Every complete record left by a previous process, in order."""
        return _in_schema(self._store.batches(flushed=False), self.schema)


class _LocalSegments:
    """``segment-<n>.arrows`` streams appended in place; ``flushed-<n>.arrows`` once flushed."""

    def __init__(self, directory: Location, schema: pa.Schema):
        self.directory, self.schema = directory, schema
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._sink = None

    def _entries(self, kind: str) -> list[Entry]:
        return self.directory.files(prefix=f"{kind}-", suffix=".arrows")

    def next_segment(self) -> int:
        numbers = [_number(e.name) for kind in ("segment", "flushed") for e in self._entries(kind)]
        return max(numbers, default=-1) + 1

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
        for entry in self._entries("segment"):
            if _number(entry.name) <= segment:
                entry.location.delete()

    def mark_flushed(self, segment: int) -> None:
        for entry in self._entries("segment"):
            if _number(entry.name) <= segment:
                flushed = self.directory / ("flushed-" + entry.name.split("-", 1)[1])
                entry.location.atomic_rename(flushed)

    def prune(self, keep_s: float) -> None:
        flushed = self._entries("flushed")
        newest = max((e.mtime for e in flushed), default=0.0)
        for entry in flushed:
            if entry.mtime < newest - keep_s:
                entry.location.delete()

    def batches(self, flushed: bool) -> list[pa.RecordBatch]:
        kind = "flushed" if flushed else "segment"
        return [b for e in self._entries(kind) for b in _complete_batches(e.location)]


class _ObjectSegments:
    """``segment-<n>/<record>.arrows`` objects, one upload each; a ``flushed-through`` object
    names the last flushed segment (kept ones are pruned by whole segment folders)."""

    def __init__(self, directory: Location, schema: pa.Schema):
        self.directory, self.schema = directory, schema
        self._records = 0
        self._open_segment = -1

    def _segments(self) -> dict[int, list[Entry]]:
        """Every segment's records (one listing), by segment number."""
        found: dict[int, list[Entry]] = defaultdict(list)
        for entry in self.directory.files(suffix=".arrows", recursive=True):
            folder = entry.location.parent.name
            if folder.startswith("segment-"):
                found[_number(folder)].append(entry)
        return found

    def _flushed_through(self) -> int:
        try:
            return int((self.directory / MARKER).read_text())
        except (FileNotFoundError, ValueError):
            return -1

    def next_segment(self) -> int:
        return max([*self._segments(), self._flushed_through()], default=-1) + 1

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

    def mark_flushed(self, segment: int) -> None:
        (self.directory / MARKER).write_text(str(segment))

    def prune(self, keep_s: float) -> None:
        through = self._flushed_through()
        flushed = {n: e for n, e in self._segments().items() if n <= through}
        newest = max((x.mtime for e in flushed.values() for x in e), default=0.0)
        for number, entries in flushed.items():
            if max(x.mtime for x in entries) < newest - keep_s:
                (self.directory / f"segment-{number:08d}").delete_tree()

    def batches(self, flushed: bool) -> list[pa.RecordBatch]:
        through = self._flushed_through()
        batches = []
        for number, entries in sorted(self._segments().items()):
            if (number <= through) == flushed:
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
