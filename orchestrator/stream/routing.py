"""Which feature shard owns which (exchange, symbol): a stable hash, the same in every process."""

from __future__ import annotations

import zlib

import numpy as np

from orchestrator.stream.events import ModelOutput
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


def canary_share(model_id: str, exchange: str, symbol: str) -> float:
    """Where a symbol falls in [0, 1) for ``model_id``'s canary: the canary publishes for
    the symbols below its fraction. Stable in every process; salted with the model id so
    two models' canaries do not take the same symbols, and apart from the shard hash."""
    return zlib.crc32(f"canary|{model_id}|{exchange}|{symbol}".encode()) / 2**32


class CanarySplit:
    """Which rows of a tick a canary publishes for (each symbol hashed once)."""

    def __init__(self, fractions: dict[str, float]):
        self.fractions = dict(fractions)
        self._share: dict[tuple[str, str, str], float] = {}

    def canary_rows(self, model_id: str, exchange, symbol) -> np.ndarray | None:
        """(n,) bool: rows whose published signal is the canary's; None: no canary."""
        fraction = self.fractions.get(model_id)
        if fraction is None:
            return None
        shares = []
        for key in zip(_strings(exchange), _strings(symbol), strict=True):
            share = self._share.get((model_id, *key))
            if share is None:
                share = self._share[(model_id, *key)] = canary_share(model_id, *key)
            shares.append(share)
        return np.array(shares, dtype=np.float64) < fraction


def _strings(values) -> list[str]:
    return values.to_pylist() if hasattr(values, "to_pylist") else [str(v) for v in values]


def publication(answers: list, exchange, symbol, split: CanarySplit) -> tuple[list[tuple], int]:
    """Each model answer of one tick with the rows it publishes (``(output, published)``:
    an (n,) bool array, or None for all; a failed call stays an exception, with None), and
    how many challenger rows were dropped.

    A shadow publishes nothing. A canary that answered publishes for its share of the
    symbols and its champion for the others; when it did not answer (a failed call), the
    champion publishes for all. A challenger answering with its champion's version (promoted
    while it ran) is the same model twice, with the same event ids: it is dropped."""
    outputs = [a if isinstance(a, BaseException) else ModelOutput.from_response(a) for a in answers]
    models = [o for o in outputs if isinstance(o, ModelOutput)]
    champions = {(o.model_id, o.version) for o in models if o.role == "production"}
    dropped = 0
    kept: list = []
    for output in outputs:
        if (
            isinstance(output, ModelOutput)
            and output.role != "production"
            and (output.model_id, output.version) in champions
        ):
            dropped += len(output.values)
            continue
        kept.append(output)
    canaries = {
        o.model_id
        for o in kept
        if isinstance(o, ModelOutput) and o.role == "canary" and o.model_id in split.fractions
    }
    result: list[tuple] = []
    for output in kept:
        if not isinstance(output, ModelOutput):
            result.append((output, None))
        elif output.model_id in canaries and output.role != "shadow":
            mine = split.canary_rows(output.model_id, exchange, symbol)
            # (never None: ``canaries`` holds only models with a fraction)
            side = None if mine is None else mine if output.role == "canary" else ~mine
            result.append((output, side))
        elif output.role != "production":  # a shadow (or a canary without a fraction)
            result.append((output, np.zeros(len(output.values), dtype=bool)))
        else:
            result.append((output, None))
    return result, dropped
