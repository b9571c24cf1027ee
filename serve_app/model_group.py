"""Models grouped into Serve deployments, and a group member's handle.

Light on purpose: a ``ModelInGroup`` is pickled into every feature shard and the ingress,
which import this module to read it.
"""

from __future__ import annotations

from collections.abc import Iterable


def split_key(key: str) -> tuple[str, str]:
    """``direction-1m`` (or a challenger's serving key ``direction-1m-shadow``) ->
    (``direction``, ``1m``)."""
    model_type, _, rest = key.partition("-")
    return model_type, rest.partition("-")[0]


def role_of(key: str) -> str:
    """The role a serving key names: ``direction-1m-canary`` -> canary; the bare model id
    is the champion's (production)."""
    return key.split("-", 2)[2] if key.count("-") >= 2 else "production"


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


class ModelsInGroup:
    """Several models of one group deployment called as one: ``.predict.remote(rows)`` sends
    the rows once and answers a list, one answer per model in ``keys`` order. A feature
    shard calls each timeframe's group this way: one Serve call per tick and group, however
    many model types it hosts."""

    def __init__(self, handle, keys: tuple[str, ...]):
        self.handle, self.keys = handle, tuple(keys)

    @property
    def predict(self) -> _Bound:
        return _Bound(self.handle.predict_models, self.keys)

    @property
    def describe(self) -> _Bound:
        return _Bound(self.handle.describe, self.keys[0])

    @property
    def pid(self):
        return self.handle.pid


def calls_per_tick(handles: list) -> list:
    """A timeframe's model handles with the members of one group deployment merged into one
    ``ModelsInGroup``, in first-seen order; other handles are kept as they are."""
    merged: dict[object, list] = {}
    order: list = []
    for handle in handles:
        if isinstance(handle, ModelInGroup):
            members = merged.setdefault(_deployment_of(handle.handle), [])
            if not members:
                order.append(members)
            members.append(handle)
        else:
            order.append(handle)
    return [
        entry
        if not isinstance(entry, list)
        else entry[0]
        if len(entry) == 1
        else ModelsInGroup(entry[0].handle, tuple(m.key for m in entry))
        for entry in order
    ]


def _deployment_of(handle) -> object:
    """Which deployment a handle calls: handles unpickled apart are distinct objects."""
    name = getattr(handle, "deployment_name", None)
    return (getattr(handle, "app_name", None), name) if name else id(handle)
