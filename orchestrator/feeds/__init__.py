"""Feed sources: where closed 1m candles come from (synthetic, replay, ccxt REST, ccxt.pro).

Every source has the same shape (``FeedSource``); the feed actor wraps any of them with
validation, exactly-once gating and sharding, so a source only has to produce candles.
"""
