"""The sink's write-ahead logs, without Ray: what a sink took but had not flushed when its
process (or node) died is in the logs once the next sink starts."""

from __future__ import annotations

import asyncio

from orchestrator.actors.sink import PredictionSink
from orchestrator.config import SinkConfig
from orchestrator.sinks.parquet_log import read_log
from orchestrator.stream.outcomes import OUTCOME_SCHEMA
from tests.unit.core.test_challengers import _better, _run

Sink = PredictionSink.__ray_metadata__.modified_class  # the plain class Ray wraps


def test_outcomes_a_dead_sink_took_but_had_not_flushed_are_recovered_once(tmp_path):
    config = SinkConfig(log_dir=str(tmp_path / "log"), flush_rows=10**9, flush_seconds=3600)
    _, outcomes = _run(_better)

    async def took_then_died():
        sink = Sink(config)
        await sink.deliver([(None, outcomes)])  # confirmed to the shard, not yet flushed
        assert sink._outcome_log.pending_rows == outcomes.num_rows
        # the process dies here: nothing flushed, nothing closed

    asyncio.run(took_then_died())
    root = tmp_path / "log-outcomes"
    assert read_log(root, OUTCOME_SCHEMA).num_rows == 0
    Sink(config)  # the sink Ray starts again
    logged = read_log(root, OUTCOME_SCHEMA)
    assert logged.num_rows == outcomes.num_rows
    assert sorted(logged.column("event_id").to_pylist()) == sorted(
        outcomes.column("event_id").to_pylist()
    )
    Sink(config)  # and once: a third start adds nothing
    assert read_log(root, OUTCOME_SCHEMA).num_rows == outcomes.num_rows
