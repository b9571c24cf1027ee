"""Exchanges through ccxt: ``config`` (the typed exchange config and client factory),
``common`` (what both transports share: OHLCV fetching, counters, staleness), ``rest``
(polling) and ``ws`` (ccxt.pro websockets)."""
