"""The sink's write-ahead logs, without Ray: what a sink took but had not flushed when its
process (or node) died is in the logs once the next sink starts; its log and WAL on a local
folder and on an S3 server (``storage_root``), the case of a node that died with its disk."""

from __future__ import annotations

import asyncio

import numpy as np

from orchestrator.actors.sink import PredictionSink
from orchestrator.config import SinkConfig
from orchestrator.sinks.parquet_log import read_log
from orchestrator.stream.outcomes import OUTCOME_SCHEMA
from tests.unit.core.test_challengers import START, SYMBOLS, _better, _events, _run

Sink = PredictionSink.__ray_metadata__.modified_class  # the plain class Ray wraps


def test_what_a_dead_sink_took_but_had_not_flushed_is_recovered_once(storage_root):
    config = SinkConfig(log_dir=f"{storage_root}/log", flush_rows=10**9, flush_seconds=3600)
    _, outcomes = _run(_better)
    predictions = _events("v1", "production", SYMBOLS, START, np.full(len(SYMBOLS), 0.5))

    async def took_then_died():
        sink = Sink(config)
        await sink.deliver([(predictions, outcomes)])  # confirmed to the shard, not flushed
        assert sink._outcome_log.pending_rows == outcomes.num_rows
        assert sink._predictions.pending_rows == predictions.num_rows
        # the process dies here: nothing flushed, nothing closed

    asyncio.run(took_then_died())
    root = f"{storage_root}/log-outcomes"
    assert read_log(root, OUTCOME_SCHEMA).num_rows == 0
    assert read_log(f"{storage_root}/log").num_rows == 0
    Sink(config)  # the sink Ray starts again
    logged = read_log(root, OUTCOME_SCHEMA)
    assert logged.num_rows == outcomes.num_rows
    assert sorted(logged.column("event_id").to_pylist()) == sorted(
        outcomes.column("event_id").to_pylist()
    )
    logged = read_log(f"{storage_root}/log")
    assert sorted(logged.column("event_id").to_pylist()) == sorted(
        predictions.column("event_id").to_pylist()
    )
    Sink(config)  # and once: a third start adds nothing
    assert read_log(root, OUTCOME_SCHEMA).num_rows == outcomes.num_rows
    assert read_log(f"{storage_root}/log").num_rows == predictions.num_rows
