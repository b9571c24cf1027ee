"""Local fake exchange servers for tests (127.0.0.1, ephemeral ports, stopped by the test).

``binance.FakeBinance``: Binance spot REST (exchangeInfo, klines, time) and the kline
websocket stream, with fault injection; ``binance.FakeBinanceInThread`` runs it beside
code that owns its event loop. ``candle_series``: the deterministic candles they serve.
"""
