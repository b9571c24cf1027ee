"""The lines a newcomer reads first among Ray's: what runs, and never a secret."""

from orchestrator.config import parse_config
from serve_app.pipeline import startup_summary


def test_the_summary_names_feeds_shards_models_and_outputs_without_the_password():
    config = parse_config(
        {
            "environment": "demo",
            "feeds": [
                {"kind": "synthetic", "n_symbols": 5},
                {"kind": "replay", "path": "/nowhere", "symbols": ["A/USDT", "B/USDT"]},
            ],
            "features": {"shards": 3, "timeframes": ["1m", "5m"]},
            "models": [{"model_type": "direction", "timeframe": "5m"}],
            "sink": {"redis_url": "redis://:s3cret@redis.internal:6380/2"},
        }
    )
    text = startup_summary(config)
    assert text.splitlines()[0] == "tickcast demo started:"
    assert "synthetic-0 (synthetic, synthetic, 5 symbols)" in text
    assert "replay-1 (replay, binance, 2 symbols)" in text
    assert "3 on 1m, 5m" in text and "direction-5m" in text
    assert "redis.internal:6380/2" in text and "s3cret" not in text
