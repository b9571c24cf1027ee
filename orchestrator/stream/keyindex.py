"""Slots of composite keys (exchange + symbol, ...), found by one hash probe per row in Arrow
instead of building a Python string and a dict lookup per row (pure: no Ray, no I/O)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class KeyIndex:
    """Keys joined with ``separator``; slot i is ``keys[i]``, assigned in order of first
    appearance; dropping keys moves the later ones down, so slots stay dense."""

    def __init__(self, separator: str, keys: list[str] | None = None):
        self.separator = separator
        self.keys: list[str] = list(keys or [])
        self._array = pa.array(self.keys, pa.string())

    def slots(self, *parts) -> np.ndarray:
        """Each row's slot (a part may be one scalar for every row); keys never seen
        before get the next slots."""
        joined = pc.binary_join_element_wise(*(_strings(p) for p in parts), self.separator)
        found = pc.index_in(joined, value_set=self._array)
        if found.null_count:
            self.keys.extend(pc.unique(joined.filter(pc.is_null(found))).to_pylist())
            self._array = pa.array(self.keys, pa.string())
            found = pc.index_in(joined, value_set=self._array)
        return found.to_numpy().astype(np.int64)

    def find(self, key: str) -> int | None:
        """The slot of one joined key, or None (a look-up, never an insert)."""
        found = pc.index_in(pa.array([key], pa.string()), value_set=self._array)[0].as_py()
        return None if found is None else int(found)

    def drop_slots(self, slots: list[int] | np.ndarray) -> None:
        """Remove the keys at ``slots``; the others keep their order in the lower slots."""
        self.keys = np.delete(np.array(self.keys, dtype=object), slots).tolist()
        self._array = pa.array(self.keys, pa.string())

    def split(self, parts: int) -> list[np.ndarray]:
        """The keys' ``parts`` parts as object arrays (the last part may hold the separator)."""
        split = [k.split(self.separator, parts - 1) for k in self.keys]
        return [np.array([k[i] for k in split], dtype=object) for i in range(parts)]

    def __len__(self) -> int:
        return len(self.keys)


def _strings(values) -> pa.Array | pa.ChunkedArray | pa.Scalar:
    if isinstance(values, pa.Array | pa.ChunkedArray | pa.Scalar):  # a scalar broadcasts
        return values
    return pa.array(np.asarray(values, dtype=object), pa.string())
