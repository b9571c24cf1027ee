"""OutcomeTracker: live outcomes equal the training labels; metrics equal scikit-learn's."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, mean_absolute_error

from orchestrator.models.labels import (
    LABEL_SPECS,
    forward_volatility,
    next_direction,
    next_log_return,
    swing_points,
)
from orchestrator.stream.events import PREDICTION_SCHEMA, ModelOutput, TickRows, build_predictions
from orchestrator.stream.outcomes import OUTCOME_SCHEMA, OutcomeTracker, _pair_keys, merge_metrics
from tests.unit.core.test_shard_state import _identical

MINUTE = 60_000
START = 1_700_000_040_000 - 1_700_000_040_000 % MINUTE
NAMES = {
    "direction": ("prob_up",),
    "return": ("log_return",),
    "volatility": ("volatility",),
    "swing": ("p_swing_high", "p_swing_low"),
}
TRAINING_LABELS = {
    "direction": lambda c: next_direction(c["close"]),
    "return": lambda c: next_log_return(c["close"]),
    "volatility": lambda c: forward_volatility(c["close"]),
    "swing": lambda c: swing_points(c["high"], c["low"]),
}


def candle_series(n: int, seed: int) -> dict[str, np.ndarray]:
    """A random walk on a coarse price grid, so closes and highs often tie."""
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.integers(-2, 3, n)).astype(np.float64)
    prev = np.r_[close[0], close[:-1]]
    return {
        "open_time": START + MINUTE * np.arange(n, dtype=np.int64),
        "close": close,
        "high": np.maximum(prev, close) + rng.integers(0, 2, n),
        "low": np.minimum(prev, close) - rng.integers(0, 2, n),
    }


def model_values(model_type: str, n: int, rng) -> np.ndarray:
    if model_type == "swing":
        return rng.dirichlet([3, 1, 1], n)[:, 1:]
    if model_type == "direction":
        return rng.uniform(0, 1, (n, 1))
    return rng.normal(0, 0.01, (n, 1)) + (0.02 if model_type == "volatility" else 0.0)


def predictions(model_type: str, symbols, open_time, values, timeframe="1m") -> pa.Table:
    n = len(symbols)
    rows = TickRows(
        np.full(n, "x", dtype=object),
        np.asarray(symbols, dtype=object),
        timeframe,
        np.asarray(open_time, dtype=np.int64),
        np.full(n, 100.0),
        0.0,
    )
    output = ModelOutput(f"{model_type}-{timeframe}", model_type, "v1", NAMES[model_type], values)
    return build_predictions(output, rows, 1.0, 0.6, 0.7)


def replay(tracker, series: dict[str, dict], ticks: range, seed: int = 0) -> pa.Table:
    """Feed ``ticks`` candle by candle; after each, every model predicts on every symbol."""
    rng = np.random.default_rng(seed)
    symbols = sorted(series)
    outcomes = []
    for i in ticks:
        present = [s for s in symbols if i < len(series[s]["close"])]
        if not present:
            continue
        col = {
            k: np.array([series[s][k][i] for s in present])
            for k in ("open_time", "close", "high", "low")
        }
        outcomes.append(tracker.observe_candles("x", np.array(present, dtype=object), "1m", **col))
        for model_type in NAMES:
            values = model_values(model_type, len(present), rng)
            tracker.add_predictions(predictions(model_type, present, col["open_time"], values))
    return pa.concat_tables(outcomes)


def predictions_made(series, seed: int = 0) -> dict:
    """{(model_type, symbol, open_time): (value, p_low)} exactly as ``replay`` made them."""
    tracker = OutcomeTracker()
    made = {}
    original = tracker.add_predictions

    def spy(table):
        for row in table.to_pylist():
            outputs = dict(row["outputs"])
            made[(row["model_type"], row["symbol"], row["open_time"])] = (
                row["value"],
                outputs.get("p_swing_low", np.nan),
            )
        original(table)

    tracker.add_predictions = spy
    replay(tracker, series, range(max(len(s["close"]) for s in series.values())), seed)
    return made


@pytest.fixture(scope="module")
def run():
    series = {f"S{i}/USDT": candle_series(90 + 7 * i, seed=i) for i in range(3)}
    tracker = OutcomeTracker(window=10_000)
    outcomes = replay(tracker, series, range(200))
    return series, tracker, outcomes, predictions_made(series)


def rows_of(outcomes: pa.Table, model_type: str) -> list[dict]:
    return [r for r in outcomes.to_pylist() if r["model_type"] == model_type]


@pytest.mark.parametrize("model_type", list(NAMES))
def test_realized_values_equal_the_training_labels(run, model_type):
    series, _, outcomes, _ = run
    got = {(r["symbol"], r["open_time"]): r for r in rows_of(outcomes, model_type)}
    expected = {}
    for symbol, candles in series.items():
        labels = TRAINING_LABELS[model_type](candles)
        for t, label in zip(candles["open_time"].tolist(), labels.tolist(), strict=True):
            if np.isfinite(label):
                expected[(symbol, t)] = label
    assert set(got) == set(expected)  # every labellable candle scored, nothing else
    keys = sorted(expected)
    np.testing.assert_array_equal([got[k]["realized"] for k in keys], [expected[k] for k in keys])
    horizon = LABEL_SPECS[model_type].horizon
    assert all(r["scored_at_open_time"] == r["open_time"] + horizon * MINUTE for r in got.values())
    if model_type == "swing":  # the series must exercise every class
        assert {0.0, 1.0, 2.0} <= set(expected.values())


def test_direction_correctness_and_error(run):
    _, _, outcomes, made = run
    rows = rows_of(outcomes, "direction")
    p = np.array([made[("direction", r["symbol"], r["open_time"])][0] for r in rows])
    y = np.array([r["realized"] for r in rows])
    assert [r["correct"] for r in rows] == ((p >= 0.5) == (y == 1)).tolist()
    np.testing.assert_allclose([r["error"] for r in rows], (p - y) ** 2)
    assert 0 < sum(r["correct"] for r in rows) < len(rows)


def test_regressors_have_no_correctness_and_absolute_errors(run):
    _, _, outcomes, made = run
    for model_type in ("return", "volatility"):
        rows = rows_of(outcomes, model_type)
        pred = np.array([made[(model_type, r["symbol"], r["open_time"])][0] for r in rows])
        assert all(r["correct"] is None and r["log_loss"] is None for r in rows)
        np.testing.assert_allclose(
            [r["error"] for r in rows], np.abs(pred - [r["realized"] for r in rows])
        )


def swing_proba(rows, made) -> np.ndarray:
    high, low = np.array([made[("swing", r["symbol"], r["open_time"])] for r in rows]).T
    return np.column_stack([1 - high - low, high, low])


def test_metrics_equal_scikit_learn(run):
    _, tracker, outcomes, made = run
    metrics = tracker.metrics()["models"]
    rows = rows_of(outcomes, "direction")
    p = np.array([made[("direction", r["symbol"], r["open_time"])][0] for r in rows])
    y = np.array([r["realized"] for r in rows])
    got = metrics["direction-1m"]["1m"]
    assert got["count"] == got["scored"] == len(rows)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert got["brier"] == pytest.approx(brier_score_loss(y, p))
    assert got["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1]))

    rows = rows_of(outcomes, "swing")
    proba, y = swing_proba(rows, made), np.array([r["realized"] for r in rows]).astype(int)
    got = metrics["swing-1m"]["1m"]
    assert got["accuracy"] == pytest.approx(accuracy_score(y, proba.argmax(axis=1)))
    assert got["brier"] == pytest.approx(((proba - np.eye(3)[y]) ** 2).sum(axis=1).mean())
    assert got["log_loss"] == pytest.approx(log_loss(y, proba, labels=[0, 1, 2]))

    for model_type in ("return", "volatility"):
        rows = rows_of(outcomes, model_type)
        pred = [made[(model_type, r["symbol"], r["open_time"])][0] for r in rows]
        y = [r["realized"] for r in rows]
        got = metrics[f"{model_type}-1m"]["1m"]
        assert got["mae"] == pytest.approx(mean_absolute_error(y, pred))
        assert got["rmse"] == pytest.approx(np.sqrt(np.mean((np.subtract(pred, y)) ** 2)))
        assert "accuracy" not in got


def test_the_window_slides_at_every_tick():
    series = {"A/USDT": candle_series(60, 1), "B/USDT": candle_series(60, 2)}
    tracker, window, seen = OutcomeTracker(window=7), 7, []
    rng = np.random.default_rng(5)
    for i in range(60):
        candles = {
            k: np.array([series[s][k][i] for s in sorted(series)])
            for k in ("open_time", "close", "high", "low")
        }
        out = tracker.observe_candles("x", np.array(sorted(series)), "1m", **candles)
        seen.extend(r for r in out.to_pylist() if r["model_type"] == "direction")
        tracker.add_predictions(
            predictions(
                "direction", sorted(series), candles["open_time"], model_values("direction", 2, rng)
            )
        )
        got = tracker.metrics()["models"].get("direction-1m", {}).get("1m")
        if not seen:
            assert got is None
            continue
        last = seen[-window:]
        assert got["count"] == len(last) and got["scored"] == len(seen)
        assert got["brier"] == pytest.approx(np.mean([r["error"] for r in last]))
        assert got["accuracy"] == pytest.approx(np.mean([r["correct"] for r in last]))
    assert len(seen) > 3 * window


def test_a_batch_larger_than_the_window_keeps_its_newest_outcomes():
    tracker, symbols = OutcomeTracker(window=3), [f"S{i}" for i in range(8)]
    tick(tracker, symbols, 0)
    tracker.add_predictions(
        predictions("direction", symbols, np.full(8, START), np.linspace(0.05, 0.95, 8)[:, None])
    )
    out = tick(tracker, symbols, 1)
    got = tracker.metrics()["models"]["direction-1m"]["1m"]
    assert out.num_rows == 8 and got["count"] == 3
    assert got["brier"] == pytest.approx(np.mean(out.column("error").to_numpy()[-3:]))


def tick(tracker, symbols, i, timeframe="1m", step=MINUTE):
    n = len(symbols)
    price = np.full(n, 100.0 + i)
    return tracker.observe_candles(
        "x",
        np.array(symbols, dtype=object),
        timeframe,
        np.full(n, START + i * step),
        price,
        price + 1,
        price - 1,
    )


def direction_at(symbols, i, timeframe="1m", step=MINUTE) -> pa.Table:
    n = len(symbols)
    return predictions(
        "direction", symbols, np.full(n, START + i * step), np.full((n, 1), 0.7), timeframe
    )


def test_a_gap_or_a_vanished_symbol_expires_after_the_bound():
    tracker = OutcomeTracker(expire_after=3)
    tick(tracker, ["A", "B", "C"], 0)
    tracker.add_predictions(direction_at(["A", "B", "C"], 0))
    tick(tracker, ["A", "C"], 2)  # candle 1 never comes: a gap (B is gone from here on)
    tick(tracker, ["A", "C"], 3)
    tick(tracker, ["A", "C"], 4)
    assert tracker.pending == 3  # settling candle 1 + 3 candles = 4: not yet past the bound
    tick(tracker, ["A", "C"], 5)
    tick(tracker, ["A"], 6, timeframe="5m", step=5 * MINUTE)  # another clock expires nothing
    assert tracker.pending == 0
    got = tracker.metrics()["models"]["direction-1m"]["1m"]
    assert (got["expired"], got["scored"], got["count"]) == (3, 0, 0)


def test_a_late_prediction_is_scored_from_the_candles_already_seen():
    tracker = OutcomeTracker()
    for i in range(3):
        tick(tracker, ["A"], i)
    tracker.add_predictions(direction_at(["A"], 0))  # its settling candle 1 is already here
    (row,) = tick(tracker, ["A"], 3).to_pylist()
    assert (row["open_time"], row["realized"], row["scored_at_open_time"]) == (
        START,
        1.0,
        START + MINUTE,
    )


def test_a_replayed_old_candle_never_overwrites_a_newer_one():
    tracker = OutcomeTracker(history=32)
    for i in range(34):
        tick(tracker, ["A"], i)
    tracker.add_predictions(direction_at(["A"], 33))
    tick(tracker, ["A"], 1)  # same ring column as candle 33: a replay of old data
    (row,) = tick(tracker, ["A"], 34).to_pylist()
    assert (row["open_time"], row["realized"]) == (START + 33 * MINUTE, 1.0)


def test_pending_predictions_per_key_are_bounded_newest_kept():
    tracker = OutcomeTracker(max_pending=5)
    for i in range(12):
        tracker.add_predictions(direction_at(["A", "B"], i))
    assert tracker.pending == 10
    assert tracker.metrics()["models"]["direction-1m"]["1m"]["dropped"] == 14
    for i in range(13):
        tick(tracker, ["A", "B"], i)
    got = tracker.metrics()["models"]["direction-1m"]["1m"]
    assert got["scored"] == 10 and tracker.pending == 0  # candles 7..11 of each symbol


def test_replayed_predictions_are_scored_once_and_unknown_ones_counted():
    tracker = OutcomeTracker()
    tick(tracker, ["A"], 0)
    tracker.add_predictions(direction_at(["A"], 0))
    tracker.add_predictions(direction_at(["A"], 0))
    odd = direction_at(["A"], 0).to_pylist()
    odd[0].update(event_id="odd", model_type="sentiment")
    tracker.add_predictions(pa.Table.from_pylist(odd, schema=PREDICTION_SCHEMA))
    assert tracker.pending == 1 and tracker.metrics()["unscorable"] == 1
    assert tick(tracker, ["A"], 1).num_rows == 1


def test_a_snapshot_keeps_each_pending_prediction_with_its_event_id_and_model():
    """Pending rows are numbers inside the tracker; its snapshot still names them as the
    predictions did (checkpoints written before keep restoring, and vice versa)."""
    tracker = OutcomeTracker()
    predictions = pa.concat_tables([direction_at(["A", "B"], 0), direction_at(["A"], 1)])
    tracker.add_predictions(predictions)
    pending = tracker.snapshot()["pending"]
    for column in ("event_id", "model_id", "model_version", "model_type"):
        assert pending[column].tolist() == predictions.column(column).to_pylist(), column
    restored = OutcomeTracker.from_snapshot(pickle.loads(pickle.dumps(tracker.snapshot())))
    assert restored.snapshot()["pending"]["event_id"].tolist() == pending["event_id"].tolist()


def test_snapshot_restores_a_tracker_that_continues_identically():
    series = {f"S{i}": candle_series(70, seed=10 + i) for i in range(4)}
    original = OutcomeTracker(window=50)
    replay(original, series, range(33), seed=1)
    restored = OutcomeTracker.from_snapshot(pickle.loads(pickle.dumps(original.snapshot())))
    assert restored.metrics() == original.metrics()
    assert replay(restored, series, range(33, 70), seed=2).equals(
        replay(original, series, range(33, 70), seed=2)
    )
    assert restored.metrics() == original.metrics()
    with pytest.raises(ValueError, match="version"):
        OutcomeTracker.from_snapshot({**original.snapshot(), "version": 0})


def test_a_many_symbol_tick_equals_one_symbol_at_a_time():
    series = {f"S{i:03d}": candle_series(30, seed=100 + i) for i in range(300)}
    together = replay(OutcomeTracker(), series, range(30), seed=3)
    assert together.schema == OUTCOME_SCHEMA and together.num_rows > 300 * 20
    # Symbols are independent: a sample of them, one symbol per call, gives the same rows.
    sample = sorted(series)[::12]
    alone, rng, parts = OutcomeTracker(), np.random.default_rng(3), []
    for i in range(30):
        values = {t: model_values(t, len(series), rng) for t in NAMES}  # same draws as replay
        for symbol in sample:
            c = {k: series[symbol][k][i : i + 1] for k in ("open_time", "close", "high", "low")}
            parts.append(alone.observe_candles("x", [symbol], "1m", **c))
        for t in NAMES:
            picked = values[t][[sorted(series).index(s) for s in sample]]
            alone.add_predictions(
                predictions(t, sample, np.full(len(sample), START + i * MINUTE), picked)
            )
    in_sample = np.isin(together.column("symbol").to_numpy(zero_copy_only=False), sample)
    by_id = [("event_id", "ascending")]
    assert together.filter(in_sample).sort_by(by_id).equals(pa.concat_tables(parts).sort_by(by_id))


def test_history_too_short_for_the_longest_label_is_rejected():
    with pytest.raises(ValueError, match="history"):
        OutcomeTracker(history=8)


def _all_predictions(series: dict, ticks: range, seed: int) -> list[list[pa.Table]]:
    """Per tick, every model's predictions on every symbol present (as ``replay`` makes them)."""
    rng, symbols, out = np.random.default_rng(seed), sorted(series), []
    for i in ticks:
        present = [s for s in symbols if i < len(series[s]["close"])]
        times = np.array([series[s]["open_time"][i] for s in present])
        out.append(
            [predictions(m, present, times, model_values(m, len(present), rng)) for m in NAMES]
        )
    return out


def test_a_multi_minute_batch_scores_exactly_like_tick_by_tick():
    """A fast replay hands a shard several minutes at once: their predictions first, then all
    their candles in one call. The outcomes must be the ones tick-by-tick scoring gives."""
    series = {f"S{i}/USDT": candle_series(120, seed=10 + i) for i in range(3)}
    made = _all_predictions(series, range(120), seed=1)
    single, batched, outcomes = OutcomeTracker(window=10_000), OutcomeTracker(window=10_000), []
    for i in range(120):
        outcomes.append(single.observe_candles("x", *_candles_at(series, [i])))
        for table in made[i]:
            single.add_predictions(table)
    expected = pa.concat_tables(outcomes).sort_by("event_id")
    outcomes = []
    for start in range(0, 120, 9):
        chunk = list(range(start, min(start + 9, 120)))
        for i in chunk:
            for table in made[i]:
                batched.add_predictions(table)
        outcomes.append(batched.observe_candles("x", *_candles_at(series, chunk)))
    got = pa.concat_tables(outcomes).sort_by("event_id")
    assert expected.num_rows > 1000
    assert got.drop_columns("scored_at_open_time").equals(
        expected.drop_columns("scored_at_open_time")
    )


def _candles_at(series: dict, ticks: list[int]) -> tuple:
    keys = [(s, i) for i in ticks for s in sorted(series) if i < len(series[s]["close"])]
    symbols = np.array([s for s, _ in keys], dtype=object)
    col = {
        k: np.array([series[s][k][i] for s, i in keys])
        for k in ("open_time", "close", "high", "low")
    }
    return symbols, "1m", col["open_time"], col["close"], col["high"], col["low"]


def _shard_scorer(seed: int):
    """A function scoring the same 100 ticks of four symbols for any subset of them, as a
    shard holding only those symbols would."""
    series = {f"S{i}/USDT": candle_series(100, seed=seed + i) for i in range(4)}
    made = _all_predictions(series, range(100), seed=seed)

    def scored(symbols: list[str]) -> dict:
        tracker = OutcomeTracker(window=10_000)
        _feed_symbols(tracker, series, made, symbols, range(100))
        return tracker.metrics()

    return scored, sorted(series)


def _feed_symbols(tracker, series: dict, made: list, symbols: list[str], ticks) -> pa.Table:
    """Feed ``ticks`` of ``symbols`` only: their candles, then their predictions of ``made``."""
    keep, outcomes = pa.array(symbols), []
    for i in ticks:
        outcomes.append(
            tracker.observe_candles("x", *_candles_at({s: series[s] for s in symbols}, [i]))
        )
        for table in made[i]:
            tracker.add_predictions(table.filter(pc.is_in(table.column("symbol"), keep)))
    return pa.concat_tables(outcomes)


def test_shard_trackers_merge_into_the_metrics_of_one():
    scored, symbols = _shard_scorer(seed=20)
    expected = scored(symbols)
    merged = merge_metrics([scored(["S0/USDT", "S2/USDT"]), scored(["S1/USDT", "S3/USDT"])])
    assert merged["models"].keys() == expected["models"].keys()
    for model_id, by_tf in expected["models"].items():
        for timeframe, want in by_tf.items():
            got = merged["models"][model_id][timeframe]
            assert got["count"] == want["count"] > 0 and got["scored"] == want["scored"]
            for name in ("accuracy", "brier", "log_loss", "mae", "rmse"):
                if name in want:
                    assert got[name] == pytest.approx(want[name]), (model_id, name)


def test_baselines_and_calibration_equal_numpy_on_the_same_outcomes(run):
    """The naive baseline over exactly the scored outcomes, and the reliability bins."""
    _, tracker, outcomes, made = run
    metrics = merge_metrics([tracker.metrics()])["models"]

    rows = rows_of(outcomes, "direction")
    p = np.array([made[("direction", r["symbol"], r["open_time"])][0] for r in rows])
    y = np.array([r["realized"] for r in rows])
    got, rate = metrics["direction-1m"]["1m"], y.mean()
    assert got["baseline"]["accuracy"] == pytest.approx(max(rate, 1 - rate))
    assert got["baseline"]["brier"] == pytest.approx(brier_score_loss(y, np.full(len(y), rate)))
    assert got["baseline"]["log_loss"] == pytest.approx(log_loss(y, np.full(len(y), rate)))
    bins = np.minimum((p * 10).astype(int), 9)
    want = [(p[bins == b].mean(), y[bins == b].mean(), (bins == b).sum()) for b in np.unique(bins)]
    got_curve = np.array([(c["p"], c["observed"], c["n"]) for c in got["calibration"]])
    np.testing.assert_allclose(got_curve, np.array(want, dtype=np.float64))

    y = np.array([r["realized"] for r in rows_of(outcomes, "swing")]).astype(int)
    freq = np.bincount(y, minlength=3) / len(y)
    got = metrics["swing-1m"]["1m"]["baseline"]
    assert got["brier"] == pytest.approx(((freq - np.eye(3)[y]) ** 2).sum(axis=1).mean())
    assert got["log_loss"] == pytest.approx(
        log_loss(y, np.tile(freq, (len(y), 1)), labels=[0, 1, 2])
    )

    y = np.array([r["realized"] for r in rows_of(outcomes, "return")])
    got = metrics["return-1m"]["1m"]["baseline"]  # persistence: a log return of 0
    assert (got["mae"], got["rmse"]) == pytest.approx((np.abs(y).mean(), np.sqrt((y**2).mean())))
    y = np.array([r["realized"] for r in rows_of(outcomes, "volatility")])
    got = metrics["volatility-1m"]["1m"]["baseline"]  # climatology: the window's mean
    assert (got["mae"], got["rmse"]) == pytest.approx((np.abs(y - y.mean()).mean(), y.std()))
    assert metrics["direction-1m"]["1m"]["version"] == "v1"


def test_merged_shards_give_the_baseline_of_one_tracker():
    scored, symbols = _shard_scorer(seed=30)
    one = merge_metrics([scored(symbols)])["models"]
    two = merge_metrics([scored(["S0/USDT", "S2/USDT"]), scored(["S1/USDT", "S3/USDT"])])["models"]
    for model_id in ("direction-1m", "swing-1m", "return-1m"):  # exact; volatility's MAE is not
        assert two[model_id]["1m"]["baseline"] == pytest.approx(one[model_id]["1m"]["baseline"])
    curves = [
        [list(c.values()) for c in m["direction-1m"]["1m"]["calibration"]] for m in (two, one)
    ]
    np.testing.assert_allclose(*curves)


def test_a_window_snapshot_from_before_baselines_restores_without_them(run):
    _, tracker, _, _ = run
    snap = tracker.snapshot()
    snap["windows"] = {k: (v[:, :3], f, n) for k, (v, f, n) in snap["windows"].items()}
    restored = merge_metrics([OutcomeTracker.from_snapshot(snap).metrics()])["models"]
    got = restored["direction-1m"]["1m"]
    assert got["accuracy"] == pytest.approx(
        tracker.metrics()["models"]["direction-1m"]["1m"]["accuracy"]
    )
    assert got["baseline"] is None and got["calibration"] == []


def _dropping_run(seed: int):
    """Four symbols and every model's predictions on them, and a tracker fed 50 ticks of
    them (with a 5m candle too: a second series per symbol), for ``drop`` tests."""
    series = {f"S{i}/USDT": candle_series(100, seed=seed + i) for i in range(4)}
    made = _all_predictions(series, range(100), seed=seed)
    tracker = OutcomeTracker(window=10_000)
    _feed_symbols(tracker, series, made, sorted(series), range(50))
    tick(tracker, sorted(series), 0, timeframe="5m", step=5 * MINUTE)
    return series, made, tracker


def test_a_dropped_symbol_is_forgotten_and_the_others_score_as_if_it_never_was():
    series, made, tracker = _dropping_run(seed=40)
    gone, kept = "S1/USDT", ["S0/USDT", "S2/USDT", "S3/USDT"]  # not the last: slots move
    twin = OutcomeTracker(window=10_000)
    _feed_symbols(twin, series, made, kept, range(50))
    tick(twin, kept, 0, timeframe="5m", step=5 * MINUTE)
    before, metrics = tracker.pending, tracker.metrics()["models"]
    assert tracker.drop("x", ["NOPE/USDT"]) == tracker.drop("y", kept) == 0
    assert tracker.pending == before

    assert tracker.drop("x", [gone]) == before - twin.pending > 0
    assert tracker.pending == twin.pending
    assert tracker.metrics()["models"] == metrics  # forgotten: not scored, expired or dropped
    state, twin_state = tracker.snapshot(), twin.snapshot()
    assert {symbol for _, symbol, _ in state["ring"]["keys"]} == set(kept)
    assert _identical(state["ring"], twin_state["ring"])
    assert _identical(state["pending"], twin_state["pending"])

    after = _feed_symbols(tracker, series, made, kept, range(50, 100))
    assert after.num_rows > 100
    assert after.equals(_feed_symbols(twin, series, made, kept, range(50, 100)))
    assert tracker.pending == twin.pending


def test_a_tracker_restored_after_a_drop_continues_identically():
    series, made, tracker = _dropping_run(seed=50)
    tracker.drop("x", ["S0/USDT", "S2/USDT"])
    restored = OutcomeTracker.from_snapshot(pickle.loads(pickle.dumps(tracker.snapshot())))
    assert restored.metrics() == tracker.metrics() and restored.pending == tracker.pending
    symbols = sorted(series)  # the dropped ones come back as new series
    outcomes = _feed_symbols(restored, series, made, symbols, range(50, 100))
    assert outcomes.equals(_feed_symbols(tracker, series, made, symbols, range(50, 100)))
    assert set(outcomes.column("symbol").to_pylist()) == set(symbols)
    assert restored.metrics() == tracker.metrics()


def test_pair_keys_are_exact_or_refused():
    high, low = np.array([0, 1, 1, 2]), np.array([5, 0, 5, 5])
    keys = _pair_keys(high, low)
    assert keys is not None and len(set(keys.tolist())) == 4
    assert _pair_keys(np.array([1 << 40]), np.array([1 << 30])) is None  # would not fit


def test_another_exchange_on_other_days_never_expires_this_ones_predictions():
    """Two feeds in one shard replaying different days (the local config: spot in March,
    USD-M in February): each exchange's candles are its own clock."""
    tracker = OutcomeTracker(expire_after=2)
    march = START + 40 * 86_400_000

    def candles(exchange: str, t: int):
        one = np.full(1, 100.0)
        return tracker.observe_candles(
            exchange, np.array(["S/USDT"], dtype=object), "1m", np.full(1, t), one, one, one
        )

    candles("feb", START)
    feb = predictions("direction", ["S/USDT"], [START], np.full((1, 1), 0.7))
    feb = feb.set_column(feb.schema.get_field_index("exchange"), "exchange", pa.array(["feb"]))
    tracker.add_predictions(feb)
    for i in range(5):  # March candles of another exchange, far ahead
        assert candles("mar", march + i * MINUTE).num_rows == 0
    settled = candles("feb", START + MINUTE)
    assert settled.column("exchange").to_pylist() == ["feb"]
    assert tracker.metrics()["models"]["direction-1m"]["1m"]["expired"] == 0
