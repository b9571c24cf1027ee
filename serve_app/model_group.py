"""Models grouped into Serve deployments, and a group member's handle.

Light on purpose: a ``ModelInGroup`` is pickled into every feature shard and the ingress,
which import this module to read it.
"""

from __future__ import annotations

from collections.abc import Iterable


def split_key(key: str) -> tuple[str, str]:
    """``direction-1m`` -> (``direction``, ``1m``)."""
    model_type, _, timeframe = key.partition("-")
    return model_type, timeframe


def deployment_groups(keys: Iterable[str], grouping: str) -> dict[str, tuple[str, ...]]:
    """Deployment name -> the model ids it hosts, for ``serving.model_groups``: ``none``
    (``model-<id>`` each, as before groups existed), ``timeframe`` (``models-<tf>``) or
    ``all`` (``models``)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        if grouping == "none":
            name = f"model-{key}"
        elif grouping == "timeframe":
            name = f"models-{split_key(key)[1]}"
        elif grouping == "all":
            name = "models"
        else:
            raise ValueError(f"unknown model grouping {grouping!r}")
        groups.setdefault(name, []).append(key)
    return {name: tuple(ids) for name, ids in groups.items()}


class _Bound:
    """``method.remote(*args)`` with the model's id appended."""

    def __init__(self, method, key: str):
        self._method, self._key = method, key

    def remote(self, *args):
        return self._method.remote(*args, self._key)


class ModelInGroup:
    """One model of a group deployment, with the handle interface of a deployment of its
    own: ``.predict.remote(rows)``, ``.predict_version.remote(rows, version)``,
    ``.describe.remote()``, ``.pid.remote()``."""

    def __init__(self, handle, key: str):
        self.handle, self.key = handle, key

    @property
    def predict(self) -> _Bound:
        return _Bound(self.handle.predict_model, self.key)

    @property
    def predict_version(self) -> _Bound:
        return _Bound(self.handle.predict_version, self.key)

    @property
    def describe(self) -> _Bound:
        return _Bound(self.handle.describe, self.key)

    @property
    def pid(self):
        return self.handle.pid
