"""Checkpoints of actor state: plain picklable data, written atomically.

A checkpoint is either the previous complete file or the new complete file, never a torn
mix: it is written beside the target and moved over it with ``os.replace``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path


def save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    with path.open("rb") as f:
        return pickle.load(f)
