"""BatchSequencer: batches arriving in any order are processed in sequence order."""

from __future__ import annotations

import asyncio
import random

from orchestrator.stream.sequencing import BatchSequencer


async def _process(seq_of: BatchSequencer, feed: str, seq: int, log: list, predict_s: float = 0.0):
    async with seq_of.turn(feed, seq) as new:
        if new:
            log.append(("state", feed, seq))
            await seq_of.advance(feed, seq)
            await asyncio.sleep(predict_s)  # the model call: the next batch may start meanwhile
            log.append(("done", feed, seq))


def test_batches_sent_in_any_order_update_state_in_sequence():
    async def scenario():
        sequencer, log = BatchSequencer(), []
        order = list(range(30))
        random.Random(4).shuffle(order)
        await asyncio.gather(*(_process(sequencer, "f", s, log, 0.001) for s in order))
        return log

    log = asyncio.run(scenario())
    assert [s for kind, _, s in log if kind == "state"] == list(range(30))


def test_the_next_batch_starts_while_the_previous_one_predicts():
    async def scenario():
        sequencer, log = BatchSequencer(), []
        await asyncio.gather(
            _process(sequencer, "f", 0, log, 0.05), _process(sequencer, "f", 1, log, 0.0)
        )
        return log

    assert asyncio.run(scenario()) == [
        ("state", "f", 0),
        ("state", "f", 1),
        ("done", "f", 1),
        ("done", "f", 0),
    ]


def test_replays_are_recognised_and_feeds_are_independent():
    async def scenario():
        sequencer, log = BatchSequencer({"a": 4}), []
        await asyncio.gather(
            _process(sequencer, "a", 3, log),
            _process(sequencer, "b", 0, log),
            _process(sequencer, "a", 5, log),
        )
        return log, sequencer.last

    log, last = asyncio.run(scenario())
    assert sorted(log) == sorted(
        [("state", "b", 0), ("done", "b", 0), ("state", "a", 5), ("done", "a", 5)]
    )
    assert last == {"a": 5, "b": 0}


def test_a_failed_batch_does_not_block_its_successor():
    async def failing(sequencer):
        async with sequencer.turn("f", 0):
            raise RuntimeError("bad batch")

    async def scenario():
        sequencer, log = BatchSequencer(), []
        results = await asyncio.gather(
            failing(sequencer), _process(sequencer, "f", 1, log), return_exceptions=True
        )
        return results, log

    results, log = asyncio.run(scenario())
    assert isinstance(results[0], RuntimeError) and log == [("state", "f", 1), ("done", "f", 1)]


def test_a_missing_predecessor_is_given_up_after_the_wait():
    async def scenario():
        sequencer, log = BatchSequencer(wait_s=0.05), []
        await _process(sequencer, "f", 2, log)  # 0 and 1 never come
        await _process(sequencer, "f", 3, log)
        return sequencer, log

    sequencer, log = asyncio.run(scenario())
    assert [s for kind, _, s in log if kind == "state"] == [2, 3] and sequencer.skipped == 2


def test_pause_waits_for_admitted_batches_and_holds_new_ones():
    async def scenario():
        sequencer, log = BatchSequencer(), []
        first = asyncio.ensure_future(_process(sequencer, "f", 0, log, 0.05))
        await asyncio.sleep(0.01)  # batch 0 is predicting
        second = None
        async with sequencer.paused() as seqs:
            log.append(("checkpoint", "f", seqs["f"]))
            second = asyncio.ensure_future(_process(sequencer, "f", 1, log))
            await asyncio.sleep(0.02)  # batch 1 must not start during the checkpoint
            log.append(("checkpoint done", "f", seqs["f"]))
        await asyncio.gather(first, second)
        return log

    assert asyncio.run(scenario()) == [
        ("state", "f", 0),
        ("done", "f", 0),
        ("checkpoint", "f", 0),
        ("checkpoint done", "f", 0),
        ("state", "f", 1),
        ("done", "f", 1),
    ]
