"""Prediction events on Redis Streams: one XADD per prediction, for any number of consumers.

Every prediction row becomes one stream entry whose fields are its PREDICTION_SCHEMA columns
as text (floats in shortest round-trip form, the ``outputs`` map as a JSON object, null
columns left out); ``decode_prediction`` turns an entry back into the row. Streams are
capped with ``MAXLEN ~ maxlen`` (Redis trims whole internal nodes, so a stream may hold a
little more than ``maxlen``). Other events (a backfill completion, ...) go to a second
stream as ``kind`` plus a JSON ``data`` field.

Delivery is at least once: a pipeline that fails part way may have added some rows, and
publishing again adds them again; ``event_id`` is the idempotent key consumers dedupe on.
Every Redis failure raises ``EventBusError``, whose message names the server but never
its password.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pyarrow as pa
import redis

from orchestrator.stream.events import PREDICTION_SCHEMA

PREDICTION_STREAM = "tickcast:predictions"
RECORD_STREAM = "tickcast:records"
PIPELINE_ROWS = 1000  # XADDs sent per round trip: bounds client and server buffers


class EventBusError(RuntimeError):
    """The event bus could not reach Redis, timed out, or Redis refused a command."""


def url_secrets(url: str) -> list[str]:
    """Every spelling of the password in ``url`` (userinfo or ``?password=``)."""
    parts = urlsplit(url)
    found = [parts.password or ""] + parse_qs(parts.query).get("password", [])
    return [s for raw in found if raw for s in {raw, unquote(raw)}]


def redact(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def prediction_fields(row: dict) -> dict[str, str]:
    """One prediction row as stream fields (text); null columns are left out."""
    fields = {}
    for name, value in row.items():
        if value is None:
            continue
        if name == "outputs":
            fields[name] = json.dumps({k: _finite_or_none(v) for k, v in value})
        else:
            fields[name] = repr(value) if isinstance(value, float) else str(value)
    return fields


def _finite_or_none(value: float | None) -> float | None:
    # JSON has no NaN or infinity: strict parsers (browsers) reject them.
    return value if value is not None and math.isfinite(value) else None


def decode_prediction(fields: dict[str, str]) -> dict:
    """A stream entry back to its prediction row (PREDICTION_SCHEMA names and types)."""
    row = {}
    for field in PREDICTION_SCHEMA:
        text = fields.get(field.name)
        if text is None:
            row[field.name] = None
        elif field.name == "outputs":
            row[field.name] = json.loads(text)
        elif pa.types.is_boolean(field.type):
            row[field.name] = text == "True"
        elif pa.types.is_integer(field.type):
            row[field.name] = int(text)
        elif pa.types.is_floating(field.type):
            row[field.name] = float(text)
        else:
            row[field.name] = text
    return row


def _json_default(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"record value of type {type(value).__name__} is not JSON serializable")


class RedisStreamBus:
    def __init__(
        self,
        url: str,
        stream: str = PREDICTION_STREAM,
        maxlen: int = 100_000,
        record_stream: str = RECORD_STREAM,
        timeout_s: float = 5.0,
    ):
        self._secrets = url_secrets(url)
        self.url = redact(url, self._secrets)  # safe to log
        self.stream, self.record_stream, self.maxlen = stream, record_stream, maxlen
        with self._errors("connect"):
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                decode_responses=True,
            )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Map every client failure to EventBusError with the password scrubbed."""
        try:
            yield
        except (redis.RedisError, OSError, ValueError) as exc:
            detail = redact(f"{type(exc).__name__}: {exc}", self._secrets)
            # ``from None``: the original exception and its arguments stay out of tracebacks.
            raise EventBusError(
                f"redis event bus {self.url} failed to {action}: {detail}"
            ) from None

    # --- publishing ----------------------------------------------------------------------
    def publish(self, table: pa.Table) -> list[str]:
        """XADD every prediction row (in order); returns the new entry ids."""
        rows = [prediction_fields(row) for row in table.to_pylist()]
        ids: list[str] = []
        with self._errors(f"publish to {self.stream}"):
            for start in range(0, len(rows), PIPELINE_ROWS):
                pipe = self._client.pipeline(transaction=False)
                for fields in rows[start : start + PIPELINE_ROWS]:
                    pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
                ids.extend(pipe.execute())
        return ids

    def publish_record(self, kind: str, record: dict) -> str:
        """XADD one non-prediction event (``kind``, JSON ``data``) to the record stream."""
        fields = {"kind": kind, "data": json.dumps(record, default=_json_default)}
        with self._errors(f"publish to {self.record_stream}"):
            return self._client.xadd(
                self.record_stream, fields, maxlen=self.maxlen, approximate=True
            )

    # --- consuming -----------------------------------------------------------------------
    def read(
        self, count: int = 100, start: str = "-", stream: str | None = None
    ) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` entries from ``start`` (inclusive entry id, "-" = the oldest)."""
        with self._errors("read"):
            return self._client.xrange(stream or self.stream, min=start, count=count)

    def ensure_group(self, group: str, start: str = "0", stream: str | None = None) -> bool:
        """Create consumer group ``group`` (and the stream) unless it exists; True if created.

        ``start`` "0" delivers the whole retained stream to the new group, "$" only new entries.
        """
        with self._errors("create group"):
            try:
                self._client.xgroup_create(stream or self.stream, group, id=start, mkstream=True)
            except redis.ResponseError as exc:
                if str(exc).startswith("BUSYGROUP"):
                    return False
                raise
        return True

    def read_group(
        self,
        group: str,
        consumer: str,
        count: int = 100,
        block_ms: int | None = None,
        stream: str | None = None,
    ) -> list[tuple[str, dict[str, str]]]:
        """Entries never delivered to ``group`` before, now owed by ``consumer`` until acked."""
        name = stream or self.stream
        with self._errors("read group"):
            answer = self._client.xreadgroup(
                group, consumer, {name: ">"}, count=count, block=block_ms
            )
        # RESP2 answers [[stream, entries]], RESP3 {stream: entries}.
        per_stream = answer.values() if isinstance(answer, dict) else [e for _, e in answer or []]
        return [entry for entries in per_stream for entry in entries]

    def ack(self, group: str, ids: list[str], stream: str | None = None) -> int:
        if not ids:
            return 0
        with self._errors("ack"):
            return self._client.xack(stream or self.stream, group, *ids)

    def length(self, stream: str | None = None) -> int:
        with self._errors("read length"):
            return self._client.xlen(stream or self.stream)

    def ping(self) -> bool:
        with self._errors("ping"):
            return bool(self._client.ping())

    def close(self) -> None:
        self._client.close()
