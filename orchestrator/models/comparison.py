"""Champion against challenger on the same live outcomes: a paired block bootstrap (pure).

Both versions predict every candle of every symbol (docs/models.md#champion-and-challenger),
so each scored candle gives a *pair* of losses: log loss for classifiers, absolute error for
regressors. The difference ``champion - challenger`` (positive: the challenger did better)
is summed per block of ``BLOCK_CANDLES`` consecutive candles of the timeframe: outcomes of
neighbouring candles are correlated (their label windows overlap, the market has regimes),
and resampling whole blocks keeps that correlation inside the interval. Block sums add up,
so feature shards keep their own and the pipeline merges them; the same sums come from the
outcome log (``tickcast registry promote`` reads them there).

The interval is the percentile interval of the mean difference over ``RESAMPLES`` block
resamples, with a fixed seed: the same outcomes always give the same interval.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator.market.timeframes import timeframe_ms

BLOCK_CANDLES = 30  # candles per bootstrap block (30 minutes of 1m candles, 30 days of 1d)
MAX_BLOCKS = 240  # the live comparison's memory: the newest blocks only
MIN_BLOCKS = 5  # fewer blocks give no interval
RESAMPLES = 2000
LEVEL = 0.95
SUMS = 4  # per block: pairs, sum of differences, champion's loss, challenger's loss


def pair_losses(log_loss: np.ndarray, error: np.ndarray) -> np.ndarray:
    """The loss a pair compares: log loss where there is one (classifiers), else the
    absolute error (regressors)."""
    log_loss = np.asarray(log_loss, dtype=np.float64)
    return np.where(np.isnan(log_loss), np.asarray(error, dtype=np.float64), log_loss)


def block_sums(
    open_time: np.ndarray, step_ms: int, champion_loss: np.ndarray, challenger_loss: np.ndarray
) -> dict[int, list[float]]:
    """{block: [pairs, sum(champion - challenger), sum(champion), sum(challenger)]}."""
    block = np.asarray(open_time, dtype=np.int64) // (step_ms * BLOCK_CANDLES)
    ids, inverse = np.unique(block, return_inverse=True)
    diff = champion_loss - challenger_loss
    columns = [
        np.bincount(inverse, minlength=len(ids)),
        np.bincount(inverse, diff, minlength=len(ids)),
        np.bincount(inverse, champion_loss, minlength=len(ids)),
        np.bincount(inverse, challenger_loss, minlength=len(ids)),
    ]
    return {int(b): [float(c[i]) for c in columns] for i, b in enumerate(ids.tolist())}


def add_blocks(total: dict, part: dict, keep: int | None = MAX_BLOCKS) -> dict:
    """``part``'s block sums added into ``total`` (keys as ints or their strings); only the
    newest ``keep`` blocks stay."""
    for block, sums in part.items():
        block = int(block)
        into = total.setdefault(block, [0.0] * SUMS)
        for i, value in enumerate(sums):
            into[i] += value
    if keep is not None and len(total) > keep:
        for block in sorted(total)[: len(total) - keep]:
            del total[block]
    return total


def compare(blocks: dict, champion: str | None = None, challenger: str | None = None) -> dict:
    """The comparison of merged block sums: mean losses, the mean improvement (champion's
    loss minus the challenger's: positive favours the challenger), its interval and a
    verdict (``challenger better`` / ``champion better`` only when the interval is clear of
    zero; ``undecided``, or ``too few blocks`` for an interval)."""
    sums = np.array([blocks[b] for b in sorted(blocks, key=int)], dtype=np.float64).reshape(
        -1, SUMS
    )
    pairs = float(sums[:, 0].sum())
    out: dict = {
        "champion_version": champion,
        "challenger_version": challenger,
        "pairs": int(pairs),
        "blocks": len(sums),
        "champion_loss": None,
        "challenger_loss": None,
        "improvement": None,
        "ci95": None,
        "verdict": "no pairs yet",
    }
    if not pairs:
        return out
    out.update(
        champion_loss=float(sums[:, 2].sum() / pairs),
        challenger_loss=float(sums[:, 3].sum() / pairs),
        improvement=float(sums[:, 1].sum() / pairs),
    )
    if len(sums) < MIN_BLOCKS:
        out["verdict"] = "too few blocks"
        return out
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(sums), size=(RESAMPLES, len(sums)))
    means = sums[picks, 1].sum(axis=1) / np.maximum(sums[picks, 0].sum(axis=1), 1.0)
    tail = (1.0 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    out["ci95"] = [float(low), float(high)]
    out["verdict"] = (
        "challenger better" if low > 0 else "champion better" if high < 0 else "undecided"
    )
    return out


def compare_outcomes(outcomes: pa.Table, model_id: str, challenger: str) -> dict | None:
    """The comparison of ``challenger`` (a version of ``model_id``) with the champion it
    ran beside, from outcome rows (the live outcome log): pairs are the candles both a
    challenger row of that version and a production row of another version scored. None
    when the version never ran as a challenger."""
    if "role" not in outcomes.column_names or not outcomes.num_rows:
        return None
    mine = outcomes.filter(pc.equal(outcomes.column("model_id"), model_id))
    role = pc.fill_null(mine.column("role"), "production")
    is_challenger = pc.and_(
        pc.not_equal(role, "production"), pc.equal(mine.column("model_version"), challenger)
    )
    chal = mine.filter(is_challenger)
    if not chal.num_rows:
        return None
    other_version = pc.not_equal(mine.column("model_version"), challenger)
    champ = mine.filter(pc.and_(pc.equal(role, "production"), other_version))
    keys = ["exchange", "symbol", "timeframe", "open_time"]
    left = champ.select([*keys, "model_version", "log_loss", "error"]).rename_columns(
        [*keys, "champion_version", "champion_log_loss", "champion_error"]
    )
    right = chal.select([*keys, "log_loss", "error"])
    joined = left.join(right, keys, join_type="inner")
    versions = joined.column("champion_version").unique().to_pylist() if joined.num_rows else []
    blocks: dict = {}
    for timeframe in pc.unique(joined.column("timeframe")).to_pylist():
        part = joined.filter(pc.equal(joined.column("timeframe"), timeframe))
        champion_loss = pair_losses(
            part.column("champion_log_loss").to_numpy(zero_copy_only=False),
            part.column("champion_error").to_numpy(),
        )
        challenger_loss = pair_losses(
            part.column("log_loss").to_numpy(zero_copy_only=False), part.column("error").to_numpy()
        )
        step = timeframe_ms(timeframe)
        tf_blocks = block_sums(
            part.column("open_time").to_numpy(), step, champion_loss, challenger_loss
        )
        add_blocks(blocks, tf_blocks, keep=None)
    return compare(blocks, "/".join(sorted(versions)) or None, challenger)


def live_evidence_problem(comparison: dict | None) -> str | None:
    """Why live outcomes do not support promoting the challenger (None: they do, or it
    never ran live): it must beat its champion with the interval clear of zero."""
    if comparison is None:
        return None
    if comparison["ci95"] is None:
        return (
            f"its live comparison with the champion has {comparison['pairs']} pairs in "
            f"{comparison['blocks']} blocks, too few for an interval"
        )
    low, high = comparison["ci95"]
    if low <= 0:
        return (
            f"on {comparison['pairs']} live outcomes it did not beat the champion: mean loss "
            f"improvement {comparison['improvement']:.5f}, 95% interval [{low:.5f}, {high:.5f}]"
        )
    return None
