"""Market data: the candle schema, timeframes, sources and validation (pure, no Ray)."""
