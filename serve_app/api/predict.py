"""POST /v1/predict: JSON or Arrow bodies decoded into the feature engine's columns."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from orchestrator.features import FEATURE_NAMES, compute_features, warm_rows
from orchestrator.models.registry import ModelRegistry, RegistryError
from serve_app.api.backend import BackendError
from serve_app.api.schemas import (
    ApiError,
    ArrowQuery,
    PredictRequest,
    body_media_type,
    predict_json,
    read_arrow_columns,
)

FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


class FeatureLists:
    """The features each model asks for, on the request path. Resolving lists every
    manifest folder of the registry (about 1 ms: the largest per-request cost measured), so
    an answer, a 404 too, is reused for ``ttl_s``: a promotion is seen within that time."""

    def __init__(
        self,
        registry: ModelRegistry,
        ttl_s: float = 1.0,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._registry, self._ttl_s, self._max_entries, self._clock = (
            registry,
            ttl_s,
            max_entries,
            clock,
        )
        self._known: dict[tuple, tuple[float, tuple[str, ...] | str]] = {}

    def needed(self, model_type: str, timeframe: str, version: str | None) -> tuple[str, ...]:
        key, now = (model_type, timeframe, version), self._clock()
        found = self._known.get(key)
        if found is None or now - found[0] > self._ttl_s:
            found = (now, self._resolve(*key))
            self._known.pop(key, None)
            self._known[key] = found
            if len(self._known) > self._max_entries:
                self._known.pop(next(iter(self._known)))
        if isinstance(found[1], str):
            raise BackendError(404, found[1])
        return found[1]

    def _resolve(
        self, model_type: str, timeframe: str, version: str | None
    ) -> tuple[str, ...] | str:
        try:
            return self._registry.resolve(model_type, timeframe, version).feature_names
        except RegistryError as exc:
            return str(exc)


async def predict_response(request: Request) -> Response:
    state = request.app.state
    kind = body_media_type(request.headers.get("content-type"))
    body = await request.body()
    if kind == "arrow":
        model = _model_from_query(request)
        columns, values = read_arrow_columns(body, state.config.max_rows)
        matrix, open_time = (
            _columns_matrix(columns, values, state.feature_lists.needed(*model)),
            None,
        )
    else:
        _refuse_query_with_json(request)
        parsed = _parse_json(body)
        model = (parsed.model_type, parsed.timeframe, parsed.version)
        matrix, open_time = _json_matrix(state, parsed)
    result = await state.backend.predict(*model, matrix)
    return Response(predict_json(result, model[1], open_time), media_type="application/json")


def _model_from_query(request: Request) -> tuple[str, str, str | None]:
    try:
        query = ArrowQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise _located("query", exc) from None
    return query.model_type, query.timeframe, query.version


def _refuse_query_with_json(request: Request) -> None:
    given = [name for name in ArrowQuery.model_fields if name in request.query_params]
    if given:
        raise ApiError(
            422, f"query.{given[0]}", "goes in the JSON body (the query is for Arrow bodies)"
        )


def _parse_json(body: bytes) -> PredictRequest:
    # Pydantic's own JSON parser: FastAPI's json.loads + validation took 4 ms for 256 rows.
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _located("body", exc) from None


def _located(where: str, exc: ValidationError) -> RequestValidationError:
    return RequestValidationError(
        [
            {"loc": (where, *e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False)
        ]
    )


def _json_matrix(state, body: PredictRequest) -> tuple[np.ndarray, int | None]:
    config = state.config
    if body.candles is not None:
        if len(body.candles) > config.max_window:
            raise ApiError(413, "body.candles", f"at most {config.max_window} candles per window")
        return _window_features(body.candles)
    n = len(body.rows if body.rows is not None else body.features)
    if n > config.max_rows:
        raise ApiError(
            413,
            "body.rows" if body.rows is not None else "body.features",
            f"at most {config.max_rows} rows per request, got {n}",
        )
    needed = state.feature_lists.needed(body.model_type, body.timeframe, body.version)
    if body.features is not None:
        return _features_matrix(body, needed), None
    columns = body.columns or list(needed)
    for i, row in enumerate(body.rows):
        if len(row) != len(columns):
            raise ApiError(422, f"body.rows.{i}", f"expected {len(columns)} values, got {len(row)}")
    return _columns_matrix(columns, np.asarray(body.rows, dtype=np.float64), needed), None


def _columns_matrix(columns: list[str], values: np.ndarray, needed: tuple[str, ...]) -> np.ndarray:
    """Rows given in ``columns`` order, placed in the feature engine's columns (NaN elsewhere)."""
    matrix = np.full((len(values), len(FEATURE_NAMES)), np.nan)
    matrix[:, _engine_columns(tuple(columns), needed)] = values
    return matrix


@functools.lru_cache(maxsize=256)
def _engine_columns(columns: tuple[str, ...], needed: tuple[str, ...]) -> np.ndarray:
    """Where each given column goes in the engine's order (clients repeat one layout)."""
    unknown = [c for c in columns if c not in FEATURE_INDEX]
    if unknown:
        raise ApiError(422, "body.columns", f"unknown features {unknown[:5]}")
    given = set(columns)
    missing = [c for c in needed if c not in given]
    if missing:
        raise ApiError(422, "body.columns", f"the model needs {missing[:5]}")
    return np.array([FEATURE_INDEX[c] for c in columns])


def _features_matrix(body: PredictRequest, needed: tuple[str, ...]) -> np.ndarray:
    matrix = np.full((len(body.features), len(FEATURE_NAMES)), np.nan)
    for i, row in enumerate(body.features):
        unknown = [k for k in row if k not in FEATURE_INDEX]
        missing = [k for k in needed if k not in row]
        if unknown or missing:
            what = (
                f"unknown features {unknown[:5]}" if unknown else f"missing features {missing[:5]}"
            )
            raise ApiError(422, f"body.features.{i}", what)
        for name, value in row.items():
            matrix[i, FEATURE_INDEX[name]] = value
    return matrix


def _window_features(candles: list) -> tuple[np.ndarray, int]:
    frame = pd.DataFrame([c.model_dump() for c in candles])
    times = frame["open_time"].to_numpy()
    if np.any(np.diff(times) <= 0):
        raise ApiError(422, "body.candles", "open_time must increase strictly, oldest first")
    bad = (frame["high"] < frame[["open", "close", "low"]].max(axis=1)) | (
        frame["low"] > frame[["open", "close"]].min(axis=1)
    )
    if bad.any():
        raise ApiError(
            422, f"body.candles.{int(np.flatnonzero(bad)[0])}", "high/low do not bound the candle"
        )
    if frame["taker_buy_base"].isna().all():
        frame = frame.drop(columns="taker_buy_base")
    last = compute_features(frame).to_numpy(copy=True)[-1:]
    if not warm_rows(last)[0]:
        raise ApiError(
            422, "body.candles", f"{len(candles)} candles are not enough to warm every feature up"
        )
    return last, int(times[-1])
