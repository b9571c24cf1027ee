"""Which feature shard owns which (exchange, symbol): a stable hash, the same in every process."""

from __future__ import annotations

import zlib

import numpy as np

from orchestrator.stream.keyindex import KeyIndex


def shard_of(exchange: str, symbol: str, n_shards: int) -> int:
    # zlib.crc32, not hash(): Python's str hash is salted per process, and every actor
    # (and every restart) must route a symbol to the same shard.
    return zlib.crc32(f"{exchange}:{symbol}".encode()) % n_shards


def shard_indices(exchange: np.ndarray, symbol: np.ndarray, n_shards: int) -> np.ndarray:
    """Shard id per row; computed once per distinct pair, so cheap on big batches."""
    keys = np.char.add(np.char.add(exchange.astype(str), ":"), symbol.astype(str))
    uniques, inverse = np.unique(keys, return_inverse=True)
    table = np.array([zlib.crc32(k.encode()) % n_shards for k in uniques], dtype=np.int64)
    return table[inverse]


class ShardRouter:
    """``shard_indices`` for a long-lived feed: each (exchange, symbol) is hashed once, then
    found by one Arrow hash probe per row."""

    def __init__(self, n_shards: int):
        self.n_shards = n_shards
        self._index = KeyIndex(":")  # the same "exchange:symbol" key shard_of hashes
        self._shard = np.empty(0, dtype=np.int64)

    def shards(self, exchange, symbol) -> np.ndarray:
        slots = self._index.slots(exchange, symbol)
        new = self._index.keys[len(self._shard) :]
        if new:
            hashed = [zlib.crc32(k.encode()) % self.n_shards for k in new]
            self._shard = np.concatenate([self._shard, np.array(hashed, dtype=np.int64)])
        return self._shard[slots]
