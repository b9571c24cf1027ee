"""A write-ahead log of prediction tables: what the sink has confirmed survives its crash.

Each record is appended to an Arrow IPC stream segment and flushed to the OS before the
sink answers, so a killed process loses nothing it confirmed (an OS crash may: segments are
not fsynced per record, a deliberate trade of durability for per-tick latency). When the
buffered rows reach the Parquet log, the segment is deleted; on start, leftover segments are
read back (a torn last message ends a segment) and written again.

With ``keep_s``, flushed segments are not deleted but renamed ``flushed-*`` and kept until
``keep_s`` older than the newest of them (by their last write, so a sink started hours
later still finds the last stretch of writing): ``recent()`` is what the sink wrote lately,
whatever candle dates it was for, the memory a restarted sink drops replays by.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc


class WriteAheadLog:
    def __init__(self, directory: Path, schema: pa.Schema, keep_s: float = 0.0):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.keep_s = keep_s
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._sink = None
        self._segment = self._next_segment_number()

    def _next_segment_number(self) -> int:
        numbers = [
            int(p.stem.split("-")[1])
            for pattern in ("segment-*.arrows", "flushed-*.arrows")
            for p in self.directory.glob(pattern)
        ]
        return max(numbers, default=-1) + 1

    def append(self, table: pa.Table) -> None:
        if self._writer is None:
            self._sink = (self.directory / f"segment-{self._segment:08d}.arrows").open("ab")
            self._writer = ipc.new_stream(self._sink, self.schema)
        self._writer.write_table(table.cast(self.schema))
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
        return closed

    def drop_through(self, segment: int) -> None:
        """Everything in segments up to ``segment`` is durable elsewhere: drop them."""
        for path in self.directory.glob("segment-*.arrows"):
            if int(path.stem.split("-")[1]) <= segment:
                path.unlink()

    def truncate(self) -> None:
        """Everything appended so far is durable elsewhere: drop it (with ``keep_s``: keep it
        a while as the record of recent writes)."""
        self._close()
        for path in self.directory.glob("segment-*.arrows"):
            if self.keep_s > 0:
                path.replace(path.with_name("flushed-" + path.name.split("-", 1)[1]))
            else:
                path.unlink()
        self._prune()
        self._segment += 1

    def _prune(self) -> None:
        flushed = [(p.stat().st_mtime, p) for p in self.directory.glob("flushed-*.arrows")]
        if not flushed:
            return
        newest = max(mtime for mtime, _ in flushed)
        for mtime, path in flushed:
            if mtime < newest - self.keep_s:
                path.unlink(missing_ok=True)

    def recent(self) -> pa.Table:
        """What was flushed in the last ``keep_s`` of writing (``keep_s`` 0: nothing)."""
        tables = []
        for path in sorted(self.directory.glob("flushed-*.arrows")):
            tables.extend(_complete_batches(path))
        return _in_schema(tables, self.schema)

    def recover(self) -> pa.Table:
        """Every complete record left by a previous process, in order."""
        tables = []
        for path in sorted(self.directory.glob("segment-*.arrows")):
            tables.extend(_complete_batches(path))
        return _in_schema(tables, self.schema)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None


def _complete_batches(path: Path) -> list[pa.RecordBatch]:
    batches = []
    try:
        with ipc.open_stream(pa.memory_map(str(path))) as reader:
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
