"""The Kafka sink's JSON, written a column at a time in Arrow: every row reads back exactly
as orjson would write it, whatever the values (NaN, infinities, nulls, quotes, backslashes,
control characters, whole floats, empty and null maps)."""

from __future__ import annotations

import math

import orjson
import pyarrow as pa

from orchestrator.bench.history import prediction_rows
from orchestrator.sinks.kafka_out import event_messages, json_objects
from orchestrator.stream.events import PREDICTION_SCHEMA


def expected(row: dict) -> dict:
    """What a consumer should read: orjson's own encoding of the row (NaN and inf -> null)."""
    plain = {k: dict(v) if k == "outputs" and v is not None else v for k, v in row.items()}
    return orjson.loads(orjson.dumps(plain))


def test_real_prediction_rows_read_back_as_orjson_writes_them():
    table = prediction_rows(
        [1_767_225_600_000, 1_767_225_660_000], ["BTC/USDT", "ETH/USDT"], "1m", ["direction"]
    )
    for text, row in zip(json_objects(table).to_pylist(), table.to_pylist(), strict=True):
        assert orjson.loads(text) == expected(row)


def test_awkward_values_read_back_exactly():
    rows = [
        {"event_id": 'quo"te\\slash', "value": float("nan"), "outputs": [("p", float("inf"))]},
        {"event_id": "tab\there\nnewline", "value": 5.0, "outputs": []},
        {"event_id": "ünïcødé €", "value": -0.0, "outputs": None},
        {"event_id": "tiny", "value": 8.9e-06, "outputs": [("a", 1.0), ("b", None)]},
        {"event_id": "huge", "value": 1e300, "outputs": [('x"y', -2.5)]},
    ]
    filler = {f.name: None for f in PREDICTION_SCHEMA}
    table = pa.Table.from_pylist([{**filler, **r} for r in rows], schema=PREDICTION_SCHEMA)
    texts = json_objects(table).to_pylist()
    for text, row in zip(texts, table.to_pylist(), strict=True):
        assert orjson.loads(text) == expected(row), text
    whole = orjson.loads(texts[1])["value"]
    assert isinstance(whole, float) and whole == 5.0  # "5.0", never "5"
    assert orjson.loads(texts[0])["value"] is None and math.isnan(rows[0]["value"])


def test_messages_are_keyed_by_exchange_and_symbol():
    table = prediction_rows([1_767_225_600_000], ["BTC/USDT"], "1m", ["direction"])
    messages = event_messages(table, "preds")
    assert messages.column("key").to_pylist() == [b"x:BTC/USDT"]
    assert messages.column("topic").to_pylist() == ["preds"]
    assert orjson.loads(messages.column("value")[0].as_py())["symbol"] == "BTC/USDT"
