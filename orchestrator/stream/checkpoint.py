"""Checkpoints of actor state: plain picklable data, published atomically.

A checkpoint is either the previous complete file or the new complete file, never a torn
mix (``Location.write_bytes``: a renamed temporary file locally, a single upload on an
object store), wherever ``state_dir`` points.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from orchestrator.storage import Location, locate


def save_checkpoint(where: Location | Path | str, state: dict) -> None:
    locate(where).write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))


def load_checkpoint(where: Location | Path | str) -> dict | None:
    try:
        data = locate(where).read_bytes()
    except FileNotFoundError:
        return None
    return pickle.loads(data)
