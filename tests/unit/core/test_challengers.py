"""Champion and challenger: roles in events and config, the canary split, scoring per role,
the paired block bootstrap live and from the outcome log, and promotion on live evidence."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.config import ConfigError, parse_config
from orchestrator.models.comparison import BLOCK_CANDLES, MIN_BLOCKS, compare, compare_outcomes
from orchestrator.models.labels import next_direction
from orchestrator.models.registry import PromotionRefused, Registry, RegistryError
from orchestrator.sinks.history import HistoryQuery, query_log
from orchestrator.sinks.parquet_log import ParquetLog, read_log
from orchestrator.stream.events import ModelOutput, TickRows, build_predictions, published_only
from orchestrator.stream.outcomes import OUTCOME_SCHEMA, OutcomeTracker, merge_metrics
from orchestrator.stream.routing import CanarySplit, canary_share, publication
from serve_app.api.schemas import to_scoreboard
from serve_app.model_group import role_of, split_key
from tests.unit.core.test_outcomes import MINUTE, START, candle_series
from tests.unit.core.test_registry import _publish, _stages

SYMBOLS = [f"S{i}/USDT" for i in range(4)]
TICKS = 12 * BLOCK_CANDLES  # twelve bootstrap blocks


def _events(version: str, role: str, symbols, open_time, p_up, published=None) -> pa.Table:
    n = len(symbols)
    rows = TickRows(
        np.full(n, "x", dtype=object),
        np.asarray(symbols, dtype=object),
        "1m",
        np.full(n, open_time, dtype=np.int64),
        np.full(n, 100.0),
        0.0,
    )
    output = ModelOutput(
        "direction-1m", "direction", version, ("prob_up",), np.asarray(p_up).reshape(n, 1),
        role=role,
    )  # fmt: skip
    return build_predictions(output, rows, 1.0, 0.6, 0.7, role=role, published=published)


def _run(challenger_p, tracker: OutcomeTracker | None = None, role: str = "shadow"):
    """Candles of four symbols; the champion (v1) always says 0.5, the challenger (v2) what
    ``challenger_p(label)`` gives for the candle's true next direction."""
    tracker = tracker or OutcomeTracker(window=10_000)
    series = {s: candle_series(TICKS + 2, seed=i) for i, s in enumerate(SYMBOLS)}
    labels = {s: next_direction(series[s]["close"]) for s in SYMBOLS}
    outcomes = []
    for i in range(TICKS + 2):
        col = {k: np.array([series[s][k][i] for s in SYMBOLS]) for k in ("close", "high", "low")}
        open_time = START + i * MINUTE
        outcomes.append(
            tracker.observe_candles(
                "x", np.array(SYMBOLS, dtype=object), "1m", np.full(4, open_time), **col
            )
        )
        label = np.array([labels[s][i] for s in SYMBOLS])
        tracker.add_predictions(
            pa.concat_tables(
                [
                    _events("v1", "production", SYMBOLS, open_time, np.full(4, 0.5)),
                    _events("v2", role, SYMBOLS, open_time, challenger_p(label)),
                ]
            )
        )
    return tracker, pa.concat_tables(outcomes)


def _better(label):
    return np.where(np.isnan(label), 0.5, np.where(label == 1.0, 0.7, 0.3))


def _worse(label):
    return np.where(np.isnan(label), 0.5, np.where(label == 1.0, 0.3, 0.7))


def test_events_carry_role_and_published_and_only_published_rows_are_signals():
    shadow = _events("v2", "shadow", SYMBOLS, START, np.full(4, 0.8), np.zeros(4, dtype=bool))
    champion = _events("v1", "production", SYMBOLS, START, np.full(4, 0.8))
    assert shadow.column("role").to_pylist() == ["shadow"] * 4
    assert champion.column("published").to_pylist() == [True] * 4
    both = pa.concat_tables([champion, shadow])
    assert published_only(both).column("model_version").to_pylist() == ["v1"] * 4
    legacy = champion.drop_columns(["published"])  # a table from before roles
    assert published_only(legacy).num_rows == 4


def test_a_challenger_is_scored_apart_from_its_champion_and_compared_on_the_same_candles():
    tracker, outcomes = _run(_better)
    metrics = merge_metrics([tracker.metrics()])
    champion = metrics["models"]["direction-1m"]["1m"]
    challenger = metrics["challengers"]["direction-1m"]["1m"]
    assert champion["version"] == "v1" and challenger["version"] == "v2"
    assert challenger["role"] == "shadow" and champion["scored"] == challenger["scored"] > 0
    assert challenger["log_loss"] < champion["log_loss"]
    c = challenger["comparison"]
    assert (c["champion_version"], c["challenger_version"]) == ("v1", "v2")
    assert c["pairs"] == champion["scored"] and c["blocks"] >= 11
    assert c["improvement"] == pytest.approx(champion["log_loss"] - challenger["log_loss"])
    assert c["ci95"][0] > 0 and c["verdict"] == "challenger better"
    assert set(outcomes.column("role").to_pylist()) == {"production", "shadow"}


def test_a_worse_challenger_and_an_equal_one_are_not_called_better():
    worse = merge_metrics([_run(_worse)[0].metrics()])["challengers"]["direction-1m"]["1m"]
    assert (
        worse["comparison"]["ci95"][1] < 0 and worse["comparison"]["verdict"] == "champion better"
    )
    equal = merge_metrics([_run(lambda y: np.full(4, 0.5))[0].metrics()])
    comparison = equal["challengers"]["direction-1m"]["1m"]["comparison"]
    assert comparison["improvement"] == 0 and comparison["verdict"] == "undecided"


def test_too_few_blocks_give_no_interval():
    blocks = {b: [10.0, 1.0, 7.0, 6.0] for b in range(MIN_BLOCKS - 1)}
    assert compare(blocks)["ci95"] is None and compare(blocks)["verdict"] == "too few blocks"
    assert compare({})["verdict"] == "no pairs yet"


def test_the_outcome_log_gives_the_live_comparison(tmp_path):
    tracker, outcomes = _run(_better, role="canary")
    live = merge_metrics([tracker.metrics()])["challengers"]["direction-1m"]["1m"]["comparison"]
    log = ParquetLog(tmp_path, 10**9)
    log.append(outcomes)
    log.flush()
    logged = compare_outcomes(read_log(tmp_path, OUTCOME_SCHEMA), "direction-1m", "v2")
    assert logged is not None
    for key in ("pairs", "blocks", "verdict", "champion_version"):
        assert logged[key] == live[key]
    assert logged["ci95"] == pytest.approx(live["ci95"])
    assert compare_outcomes(outcomes, "direction-1m", "v1") is None  # never a challenger


def test_shard_trackers_merge_into_the_comparison_of_one():
    whole = merge_metrics([_run(_better)[0].metrics()])
    # the same candles split over two trackers by symbol
    parts = []
    for half in (SYMBOLS[:2], SYMBOLS[2:]):
        tracker = OutcomeTracker(window=10_000)
        series = {s: candle_series(TICKS + 2, seed=SYMBOLS.index(s)) for s in half}
        for i in range(TICKS + 2):
            col = {k: np.array([series[s][k][i] for s in half]) for k in ("close", "high", "low")}
            t = START + i * MINUTE
            tracker.observe_candles("x", np.array(half, dtype=object), "1m", np.full(2, t), **col)
            label = np.array([next_direction(series[s]["close"])[i] for s in half])
            tracker.add_predictions(
                pa.concat_tables(
                    [
                        _events("v1", "production", half, t, np.full(2, 0.5)),
                        _events("v2", "shadow", half, t, _better(label)),
                    ]
                )
            )
        parts.append(tracker.metrics())
    merged = merge_metrics(parts)["challengers"]["direction-1m"]["1m"]["comparison"]
    expected = whole["challengers"]["direction-1m"]["1m"]["comparison"]
    assert merged["pairs"] == expected["pairs"] and merged["ci95"] == pytest.approx(
        expected["ci95"]
    )


def test_a_snapshot_keeps_the_comparison_and_a_role_less_one_restores_as_production():
    tracker, _ = _run(_better)
    restored = OutcomeTracker.from_snapshot(tracker.snapshot())
    assert merge_metrics([restored.metrics()]) == merge_metrics([tracker.metrics()])
    old = tracker.snapshot()
    old["totals"] = {k[:2]: v for k, v in old["totals"].items() if k[2] == "production"}
    old["windows"] = {k[:2]: v for k, v in old["windows"].items() if k[2] == "production"}
    old["pending"] = {k: v for k, v in old["pending"].items() if k != "role"}
    old.pop("comparisons")
    before = OutcomeTracker.from_snapshot(old).metrics()
    assert before["models"]["direction-1m"]["1m"]["version"] == "v1"
    assert before["challengers"] == {}


def test_the_scoreboard_puts_each_challenger_after_its_champion_with_its_comparison():
    tracker, _ = _run(_better)
    board = to_scoreboard(merge_metrics([tracker.metrics()]), {"direction-1m": "v1"})
    assert [(m.version, m.role) for m in board.models] == [("v1", "production"), ("v2", "shadow")]
    assert board.models[1].comparison is not None
    assert board.models[1].comparison.verdict == "challenger better"
    assert board.models[0].comparison is None


def test_the_canary_takes_its_share_of_symbols_stably_and_per_model():
    symbols = np.array([f"C{i}/USDT" for i in range(4000)], dtype=object)
    exchange = np.full(len(symbols), "binance", dtype=object)
    split = CanarySplit({"direction-1m": 0.2, "swing-1h": 0.2})
    mine = split.canary_rows("direction-1m", exchange, symbols)
    assert mine is not None and 0.18 < mine.mean() < 0.22
    again = CanarySplit({"direction-1m": 0.2}).canary_rows("direction-1m", exchange, symbols)
    assert np.array_equal(mine, again)
    other = split.canary_rows("swing-1h", exchange, symbols)
    assert other is not None and not np.array_equal(mine, other)  # salted per model
    assert split.canary_rows("return-1m", exchange, symbols) is None
    assert canary_share("direction-1m", "binance", "C0/USDT") == canary_share(
        "direction-1m", "binance", "C0/USDT"
    )


def test_serving_keys_name_the_role():
    assert split_key("direction-1m-shadow") == ("direction", "1m") == split_key("direction-1m")
    assert role_of("direction-1m-canary") == "canary" and role_of("direction-1m") == "production"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([{}, {"role": "canary", "version": "v2"}], "canary_fraction is required"),
        ([{}, {"version": "v2", "canary_fraction": 0.2}], "only for one"),
        ([{}, {"version": "v2"}], "more than one production"),
        ([{"role": "canary", "version": "v2", "canary_fraction": 0.2}], "needs a production"),
        ([{"version": "v1"}, {"role": "shadow", "version": "v1"}], "champion's version"),
        (
            [
                {},
                {"role": "shadow", "version": "v2"},
                {"role": "canary", "version": "v3", "canary_fraction": 0.1},
            ],
            "more than one challenger",
        ),  # fmt: skip
        ([{}, {"role": "canary", "version": "v2", "canary_fraction": 1.5}], "less than 1"),
    ],
)
def test_a_bad_challenger_config_names_the_problem(models, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"models": models})


def test_a_good_challenger_config_serves_each_entry_under_its_own_key():
    config = parse_config(
        {
            "models": [
                {},
                {"role": "canary", "version": "v2", "canary_fraction": 0.2},
                {"model_type": "swing", "timeframe": "1m"},
                {"model_type": "swing", "timeframe": "1m", "role": "shadow", "version": "v1"},
            ]
        }
    )
    keys = [r.serving_key for r in config.models]
    assert keys == ["direction-1m", "direction-1m-canary", "swing-1m", "swing-1m-shadow"]
    assert config.canary_fractions() == {"direction-1m": 0.2}
    assert config.shard_settings()[0].canaries == {"direction-1m": 0.2}


def test_promotion_is_refused_on_live_evidence_that_does_not_clear_zero(tmp_path):
    _publish(tmp_path, "v1", "production")
    _publish(tmp_path, "v2", "staging")
    registry = Registry(tmp_path)
    worse = merge_metrics([_run(_worse)[0].metrics()])["challengers"]["direction-1m"]["1m"]
    with pytest.raises(PromotionRefused, match="did not beat the champion"):
        registry.promote("direction-1m", "v2", live=worse["comparison"])
    assert _stages(registry) == {"v1": "production", "v2": "staging"}
    registry.promote("direction-1m", "v2", live=worse["comparison"], force=True, reason="audit")
    entry = registry.history("direction-1m")[-1]
    assert entry["forced"] and entry["live"]["verdict"] == "champion better"
    registry.rollback("direction-1m", reason="back")
    better = merge_metrics([_run(_better)[0].metrics()])["challengers"]["direction-1m"]["1m"]
    registry.promote("direction-1m", "v2", live=better["comparison"])
    entry = registry.history("direction-1m")[-1]
    assert not entry["forced"] and "live outcomes" in entry["evidence"]


def test_the_cli_reads_the_live_evidence_from_the_outcome_log(tmp_path, capsys):
    from orchestrator.cli import registry as cli

    models = tmp_path / "models"
    _publish(models, "v1", "production")
    _publish(models, "v2", "staging")
    log_dir = tmp_path / "predictions"
    outcomes = ParquetLog(tmp_path / "predictions-outcomes", 10**9)
    outcomes.append(_run(_worse)[1])
    outcomes.flush()
    argv = ["--root", str(models), "promote", "direction-1m", "v2", "--log", str(log_dir)]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert "champion better" in out and "did not beat the champion" in err
    assert _stages(Registry(models))["v2"] == "staging"


def test_the_history_api_pages_signals_and_a_role_on_request(tmp_path):
    log = ParquetLog(tmp_path, 10**9)
    for minute in range(3):
        t = START + minute * MINUTE
        canary = np.array([True, False, False, False])
        log.append(
            pa.concat_tables(
                [
                    _events("v1", "production", SYMBOLS, t, np.full(4, 0.6), ~canary),
                    _events("v2", "canary", SYMBOLS, t, np.full(4, 0.7), canary),
                    _events("v3", "shadow", SYMBOLS, t, np.full(4, 0.4), np.zeros(4, bool)),
                ]
            )
        )
    log.flush()
    signals = query_log(tmp_path, HistoryQuery(limit=100)).rows
    assert len(signals) == 12  # one per (symbol, candle)
    assert {(r["symbol"] == SYMBOLS[0], r["model_version"]) for r in signals} == {
        (True, "v2"),
        (False, "v1"),
    }
    shadow = query_log(tmp_path, HistoryQuery(limit=100, role="shadow")).rows
    assert len(shadow) == 12 and {r["model_version"] for r in shadow} == {"v3"}
    champion = query_log(tmp_path, HistoryQuery(limit=100, role="production")).rows
    assert len(champion) == 12 and {r["published"] for r in champion} == {True, False}


def _answer(version: str, role: str, n: int = 4) -> dict:
    return {
        "model_id": "direction-1m",
        "model_type": "direction",
        "version": version,
        "names": ["prob_up"],
        "values": np.full((n, 1), 0.5),
        "role": role,
    }


def test_each_candle_has_one_published_signal_whoever_answered():
    exchange = np.full(len(SYMBOLS), "x", dtype=object)
    symbols = np.array(SYMBOLS, dtype=object)
    split = CanarySplit({"direction-1m": 0.5})
    mine = split.canary_rows("direction-1m", exchange, symbols)
    assert mine is not None
    both, dropped = publication(
        [_answer("v1", "production"), _answer("v2", "canary")], exchange, symbols, split
    )
    assert dropped == 0 and np.array_equal(both[1][1], mine) and np.array_equal(both[0][1], ~mine)
    # The canary's call failed: the champion publishes for every symbol this tick.
    failed, _ = publication(
        [_answer("v1", "production"), RuntimeError("replica died")], exchange, symbols, split
    )
    assert failed[0][1] is None and isinstance(failed[1][0], RuntimeError)
    shadow, _ = publication(
        [_answer("v1", "production"), _answer("v2", "shadow")], exchange, symbols, split
    )
    assert not shadow[1][1].any() and shadow[0][1] is None
    # Promoted while it ran: the challenger answers with the champion's version: dropped.
    same, dropped = publication(
        [_answer("v2", "production"), _answer("v2", "canary")], exchange, symbols, split
    )
    assert dropped == 4 and len(same) == 1 and same[0][1] is None


def test_a_challenger_marked_in_the_registry_is_what_an_unpinned_shadow_runs(tmp_path, capsys):
    from orchestrator.cli import registry as cli

    _publish(tmp_path, "v1", "production")
    _publish(tmp_path, "v2", "staging")
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="no challenger to run as shadow"):
        registry.resolve("direction", "1m", role="shadow")
    root = ["--root", str(tmp_path)]
    assert cli.main([*root, "challenger", "direction-1m", "v2", "--reason", "try"]) == 0
    assert "direction-1m@v2 is the challenger" in capsys.readouterr().out
    assert registry.resolve("direction", "1m", role="canary").version == "v2"
    assert registry.resolve("direction", "1m").version == "v1"  # the champion unchanged
    assert cli.main([*root, "challenger", "direction-1m", "--clear"]) == 0
    assert registry.challenger("direction-1m") is None
    actions = [(e["action"], e["version"]) for e in registry.history("direction-1m")]
    assert actions == [("challenger", "v2"), ("clear challenger", "v2")]
    with pytest.raises(SystemExit):  # a version and --clear: a usage error
        cli.main([*root, "challenger", "direction-1m", "v2", "--clear"])
    config = parse_config({"models": [{}, {"role": "shadow"}]})  # follows the mark
    assert config.models[1].version is None and config.models[1].serving_key.endswith("shadow")


def test_promoting_the_challenger_clears_its_mark_and_a_shadow_keeps_running(tmp_path):
    """The challenger promoted is the champion: its mark is cleared (recorded), and a
    replica's unpinned shadow keeps the version it runs (no registry-outage warning) until
    another version is marked, then switches to it on the next poll."""
    from orchestrator import PROJECT_ROOT
    from serve_app.model_server import ModelServer

    shipped = Registry(PROJECT_ROOT / "models_onnx")
    registry = Registry(tmp_path)
    for version in ("v1", "v2"):
        shipped.copy_to(registry, "direction-1m", version)
    registry.promote("direction-1m", "v1")
    registry.set_challenger("direction-1m", "v2", reason="try v2")
    server = ModelServer.func_or_class(("direction-1m", "direction-1m-shadow"), str(tmp_path))
    assert server.describe("direction-1m-shadow")["version"] == "v2"

    registry.promote("direction-1m", "v2")
    assert registry.challenger("direction-1m") is None
    actions = [(e["action"], e["version"]) for e in registry.history("direction-1m")]
    assert actions[-2:] == [("promote", "v2"), ("clear challenger", "v2")]
    assert registry.history("direction-1m")[-1]["reason"] == "v2 promoted to production"
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # Serve's logger does not propagate to pytest's
    logging.getLogger("ray.serve").addHandler(handler)
    try:
        for _ in range(2):  # two polls: one line
            server._switch("direction-1m", None)
            server._switch("direction-1m-shadow", None)
    finally:
        logging.getLogger("ray.serve").removeHandler(handler)
    assert server.describe("direction-1m")["version"] == "v2"
    assert server.describe("direction-1m-shadow")["version"] == "v2"
    said = [r.getMessage() for r in records]
    assert said.count("direction-1m-shadow: no challenger marked; keeping direction-1m@v2") == 1

    registry.set_challenger("direction-1m", "v1", reason="v1 again, as the challenger")
    server._switch("direction-1m-shadow", None)
    assert server.describe("direction-1m-shadow")["version"] == "v1"
    assert server.describe("direction-1m")["version"] == "v2"
