"""The ingress coalescer (pure asyncio): concurrent predicts for one model share a call, the
answer is split back in order, errors reach every request of the failed call, a lone request
goes at once, and no call carries more than ``max_rows`` rows (unless one request does)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serve_app.api.coalesce import Coalescer, split_result

GUARD_S = 10.0  # a hang guard only: nothing here waits for time to pass


class FakeModel:
    """Answers each row with its sum; records every call's rows; can hold calls open."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[tuple[object, np.ndarray]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = fail
        self.called = asyncio.Event()

    async def __call__(self, key, rows: np.ndarray) -> dict:
        self.calls.append((key, rows))
        self.called.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return {"model_id": str(key), "values": rows.sum(axis=1, keepdims=True)}


def rows_of(n: int, start: float) -> np.ndarray:
    return np.arange(start, start + 3 * n, dtype=np.float64).reshape(n, 3)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, GUARD_S))


async def hold_one_call_open(coalescer: Coalescer, model: FakeModel, key="m") -> asyncio.Task:
    """Start a call that stays in flight until ``model.release`` is set."""
    model.release.clear()
    first = asyncio.create_task(coalescer.predict(key, rows_of(1, -100.0)))
    await model.called.wait()
    return first


def test_a_lone_request_goes_at_once_whatever_the_window():
    async def scenario():
        model = FakeModel()
        coalescer = Coalescer(model, window_s=3600.0, max_rows=1000)
        answer = await coalescer.predict("m", rows_of(2, 0.0))
        return model, answer

    model, answer = run(scenario())
    assert len(model.calls) == 1
    np.testing.assert_array_equal(answer["values"], rows_of(2, 0.0).sum(axis=1, keepdims=True))


def test_requests_during_a_call_share_the_next_one_and_get_their_own_rows_back():
    sizes = [1, 3, 2, 5]

    async def scenario():
        model = FakeModel()
        coalescer = Coalescer(model, window_s=3600.0, max_rows=sum(sizes))  # sent when full
        first = await hold_one_call_open(coalescer, model)
        parts = [rows_of(n, 10.0 * i) for i, n in enumerate(sizes)]
        waiting = [asyncio.create_task(coalescer.predict("m", p)) for p in parts]
        await asyncio.sleep(0)  # every request is in before the first call returns
        model.release.set()
        answers = await asyncio.gather(*waiting)
        await first
        return model, parts, answers

    model, parts, answers = run(scenario())
    assert len(model.calls) == 2
    np.testing.assert_array_equal(model.calls[1][1], np.concatenate(parts))  # submission order
    for part, answer in zip(parts, answers, strict=True):
        np.testing.assert_array_equal(answer["values"], part.sum(axis=1, keepdims=True))
        assert answer["model_id"] == "m"


def test_the_window_sends_a_partial_batch_while_the_earlier_call_is_still_out():
    async def scenario():
        model = FakeModel()
        coalescer = Coalescer(model, window_s=0.001, max_rows=1000)
        first = await hold_one_call_open(coalescer, model)
        model.called.clear()
        second = asyncio.create_task(coalescer.predict("m", rows_of(2, 0.0)))
        await model.called.wait()  # the timer sent it: the first call has not returned
        calls_while_first_out = len(model.calls)
        model.release.set()
        await asyncio.gather(first, second)
        return calls_while_first_out

    assert run(scenario()) == 2


def test_what_gathered_during_a_call_goes_as_soon_as_that_call_returns():
    async def scenario():
        model = FakeModel()
        coalescer = Coalescer(model, window_s=3600.0, max_rows=1000)  # the window never ends
        first = await hold_one_call_open(coalescer, model)
        waiting = [asyncio.create_task(coalescer.predict("m", rows_of(2, 0.0))) for _ in range(3)]
        await asyncio.sleep(0)
        model.release.set()
        await asyncio.gather(first, *waiting)
        return model

    assert [len(rows) for _, rows in run(scenario()).calls] == [1, 6]


def test_no_call_carries_more_than_max_rows_unless_one_request_does():
    sizes = [4, 4, 4, 12, 10]

    async def scenario():
        model = FakeModel()
        coalescer = Coalescer(model, window_s=3600.0, max_rows=10)
        first = await hold_one_call_open(coalescer, model)
        waiting = [asyncio.create_task(coalescer.predict("m", rows_of(n, 0.0))) for n in sizes]
        await asyncio.sleep(0)  # every request is in before the first call returns
        model.release.set()
        answers = await asyncio.gather(*waiting)
        await first
        return model, answers

    model, answers = run(scenario())
    assert [len(rows) for _, rows in model.calls] == [1, 8, 4, 12, 10]
    assert [len(a["values"]) for a in answers] == sizes


def test_a_failed_call_fails_every_request_it_carried_and_the_next_call_still_works():
    async def scenario():
        model = FakeModel(fail=RuntimeError("model replica died"))
        coalescer = Coalescer(model, window_s=3600.0, max_rows=6)
        first = await hold_one_call_open(coalescer, model)
        waiting = [asyncio.create_task(coalescer.predict("m", rows_of(3, 0.0))) for _ in range(2)]
        model.release.set()
        outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)
        model.fail = None
        after = await coalescer.predict("m", rows_of(1, 0.0))
        return outcomes, after

    outcomes, after = run(scenario())
    assert [str(o) for o in outcomes] == ["model replica died"] * 3
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert len(after["values"]) == 1


def test_a_cancelled_request_does_not_disturb_the_others_in_its_call():
    async def scenario():
        model = FakeModel()
        coalescer = Coalescer(model, window_s=3600.0, max_rows=4)
        first = await hold_one_call_open(coalescer, model)
        gone = asyncio.create_task(coalescer.predict("m", rows_of(2, 0.0)))
        kept = asyncio.create_task(coalescer.predict("m", rows_of(2, 50.0)))
        await asyncio.sleep(0)
        gone.cancel()
        model.release.set()
        answer = await kept
        await first
        return gone, answer

    gone, answer = run(scenario())
    assert gone.cancelled()
    np.testing.assert_array_equal(answer["values"], rows_of(2, 50.0).sum(axis=1, keepdims=True))


def test_models_are_never_mixed_in_one_call():
    async def scenario():
        model = FakeModel()
        coalescer = Coalescer(model, window_s=0.001, max_rows=100)
        first = await hold_one_call_open(coalescer, model, key="a")
        waiting = [
            asyncio.create_task(coalescer.predict(k, rows_of(1, 1000.0 * (k == "b"))))
            for k in "abab"
        ]
        await asyncio.sleep(0)
        model.release.set()
        answers = await asyncio.gather(*waiting)
        await first
        return model, answers

    model, answers = run(scenario())
    assert [a["model_id"] for a in answers] == list("abab")
    assert all(bool((rows >= 1000).all()) == (k == "b") for k, rows in model.calls)
    assert sorted(len(rows) for k, rows in model.calls if k == "a") == [1, 2]


def test_window_zero_turns_coalescing_off():
    async def scenario():
        model = FakeModel()
        coalescer = Coalescer(model, window_s=0.0, max_rows=100)
        await asyncio.gather(*(coalescer.predict("m", rows_of(1, 0.0)) for _ in range(5)))
        return model

    assert len(run(scenario()).calls) == 5


def test_a_result_with_the_wrong_number_of_rows_is_an_error_for_every_request():
    with pytest.raises(ValueError, match="3 rows for 4"):
        split_result({"values": np.zeros((3, 1))}, [2, 2])

    async def short_model(key, rows):
        return {"values": rows[:-1, :1]}

    async def scenario():
        coalescer = Coalescer(short_model, window_s=3600.0, max_rows=100)
        return await asyncio.gather(coalescer.predict("m", rows_of(2, 0.0)), return_exceptions=True)

    assert isinstance(run(scenario())[0], ValueError)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=12), max_rows=st.integers(1, 40))
def test_coalesced_answers_equal_one_call_per_request(sizes, max_rows):
    """Batch twin: whatever the grouping, each request gets what a call of its own returns."""

    async def scenario():
        model = FakeModel()
        coalescer = Coalescer(model, window_s=0.0005, max_rows=max_rows)
        parts = [rows_of(n, 7.0 * i) for i, n in enumerate(sizes)]
        answers = await asyncio.gather(*(coalescer.predict("m", p) for p in parts))
        return model, parts, answers

    model, parts, answers = run(scenario())
    for part, answer in zip(parts, answers, strict=True):
        np.testing.assert_array_equal(answer["values"], part.sum(axis=1, keepdims=True))
    assert sum(len(rows) for _, rows in model.calls) == sum(sizes)
    assert all(len(rows) <= max(max_rows, max(sizes)) for _, rows in model.calls)
    assert len(model.calls) <= len(sizes)
