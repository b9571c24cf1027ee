"""The public HTTP and WebSocket API, versioned under /v1 (FastAPI).

``create_api(config, backend, registry)`` builds the app around any ``Backend``: the Serve
ingress mounts it with Ray handles behind it, the uvicorn baseline and the fuzz test with
``LocalBackend``. Every invalid request is answered with a 4xx naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from orchestrator.config import ApiConfig
from orchestrator.features import FEATURE_NAMES, compute_features, warm_rows
from orchestrator.sinks.parquet_log import HistoryQuery
from serve_app.backend import Backend, BackendError
from serve_app.limits import RateLimiter, key_is_valid, load_api_keys
from serve_app.registry import Registry, RegistryError
from serve_app.schemas import (
    ARROW_STREAM,
    SYMBOL_PATTERN,
    TIMEFRAME_PATTERN,
    ApiError,
    ArrowQuery,
    LatestPredictions,
    PredictionPage,
    PredictRequest,
    PredictResponse,
    StreamCommand,
    body_media_type,
    predict_json,
    query_parameters,
    read_arrow_columns,
    to_prediction,
)

API_KEY_HEADER = "X-API-Key"
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def create_api(config: ApiConfig, backend: Backend, registry: Registry) -> FastAPI:
    api = FastAPI(title="tickcast", version="1.0.0",
                  description="Real-time market predictions served by Ray Serve.")
    api.state.backend, api.state.registry, api.state.config = backend, registry, config
    api.state.keys = load_api_keys(config.api_keys_env)
    api.state.limiter = RateLimiter(config.rate_limit_per_s, config.rate_limit_burst)
    api.state.stream_clients = 0
    api.state.feature_lists = FeatureLists(registry)
    if config.cors_origins:
        api.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=[API_KEY_HEADER, "Content-Type"])
    api.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    _add_error_handlers(api)
    _add_routes(api)
    _document_predict_body(api)
    return api


# --- cross-cutting: errors, body size, keys, rate limit --------------------------------------


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what: echoing the input back could itself fail (NaN is not JSON).
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        detail = [{"loc": exc.field.split("."), "msg": exc.message, "type": "value_error"}]
        return JSONResponse({"detail": detail},
                            status_code=exc.status, headers=_retry_after(exc))

    @api.exception_handler(BackendError)
    async def _backend_error(_: Request, exc: BackendError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status", 502))


def _retry_after(exc: ApiError) -> dict[str, str]:
    return {"Retry-After": exc.message.rsplit(" ", 2)[-2]} if exc.status == 429 else {}


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413, counting what arrives (chunked bodies too)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _too_large(send, self.max_bytes)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    message = f"body larger than {limit} bytes"
    body = f'{{"detail": [{{"loc": ["body"], "msg": "{message}", "type": "value_error"}}]}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def caller_of(request_or_socket, keys: frozenset[str], required: bool) -> str:
    """The caller's identity for rate limiting; raises 401 without a valid key when required."""
    key = request_or_socket.headers.get(API_KEY_HEADER) or request_or_socket.query_params.get("api_key")
    if required and not key_is_valid(key, keys):
        raise ApiError(401, f"header.{API_KEY_HEADER}", "missing or unknown API key")
    if key and key_is_valid(key, keys):
        return f"key:{key}"
    client = request_or_socket.client
    return f"ip:{client.host if client else 'unknown'}"


async def guard(request: Request) -> str:
    state = request.app.state
    caller = caller_of(request, state.keys, state.config.require_api_key)
    wait = state.limiter.allow(caller)
    if wait:
        raise ApiError(429, "header", f"rate limit exceeded; retry after {max(1, round(wait))} s")
    return caller


# --- routes ----------------------------------------------------------------------------------


def _add_routes(api: FastAPI) -> None:
    @api.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @api.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        ready, detail = await request.app.state.backend.ready()
        return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)

    @api.get("/v1/predictions/latest", response_model=LatestPredictions, tags=["predictions"],
             dependencies=[Depends(guard)])
    async def latest(
        request: Request,
        symbol: str | None = Query(None, pattern=SYMBOL_PATTERN, description="e.g. BTC/USDT"),
        timeframe: str | None = Query(None, pattern=TIMEFRAME_PATTERN),
    ) -> LatestPredictions:
        rows = await request.app.state.backend.latest(symbol, timeframe)
        return LatestPredictions(count=len(rows), predictions=[to_prediction(r) for r in rows])

    @api.get("/v1/predictions", response_model=PredictionPage, tags=["predictions"],
             dependencies=[Depends(guard)])
    async def history(
        request: Request,
        symbol: str | None = Query(None, pattern=SYMBOL_PATTERN),
        timeframe: str | None = Query(None, pattern=TIMEFRAME_PATTERN),
        model_id: str | None = Query(None, pattern=r"^[a-z]{1,16}-(" + TIMEFRAME_PATTERN[2:-2] + ")$"),
        start: int | None = Query(None, ge=0, lt=10**14, description="open time >= start (epoch ms)"),
        end: int | None = Query(None, ge=0, lt=10**14, description="open time < end (epoch ms)"),
        limit: int | None = Query(None, ge=1, le=10_000),
        offset: int = Query(0, ge=0, le=10**9),
    ) -> PredictionPage:
        limit = limit or request.app.state.config.page_size
        query = HistoryQuery(symbol, timeframe, model_id, start, end, limit, offset)
        rows, total = await request.app.state.backend.history(query)
        following = offset + len(rows)
        return PredictionPage(total=total, offset=offset, limit=limit,
                              next_offset=following if following < total else None,
                              predictions=[to_prediction(r) for r in rows])

    # The guard, the query and the body are read by hand (documented by PREDICT_DOC): FastAPI's
    # dependency and parameter solving was a fifth of a single-row request's cost.
    @api.post("/v1/predict", response_model=PredictResponse, tags=["predictions"],
              openapi_extra=PREDICT_DOC)
    async def predict(request: Request) -> Response:
        await guard(request)
        return await _predict(request)

    @api.get("/v1/models", tags=["models"], dependencies=[Depends(guard)])
    async def models(request: Request) -> dict:
        served = await request.app.state.backend.served_models()
        return {"models": _model_catalog(request.app.state.registry, served)}

    @api.get("/v1/status", tags=["ops"], dependencies=[Depends(guard)])
    async def status(request: Request) -> dict:
        state = request.app.state
        served = await state.backend.served_models()
        return {**await state.backend.status(),
                "api": {"stream_clients": state.stream_clients, "served_models": served}}

    @api.websocket("/v1/stream")
    async def stream(socket: WebSocket) -> None:
        await _stream(socket)


def _model_catalog(registry: Registry, served: dict[str, str]) -> list[dict]:
    return [
        {"model_id": m.model_id, "model_type": m.model_type, "timeframe": m.timeframe,
         "version": m.version, "stage": m.stage, "serving": served.get(m.model_id) == m.version,
         "feature_names": list(m.feature_names), "outputs": (getattr(m, "outputs", None) or {}).get("names"),
         "metrics": m.metrics}
        for m in registry.manifests()
    ]


# --- POST /v1/predict -----------------------------------------------------------------------

PREDICT_DOC = {
    "parameters": query_parameters(ArrowQuery),
    "requestBody": {
        "required": True,
        "description": "JSON (the default), or an Arrow IPC stream with one float32/float64 column "
                       "per feature (column names are feature names) and model_type, timeframe and "
                       "version in the query.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                    ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    },
}


def _document_predict_body(api: FastAPI) -> None:
    """The body is read by hand (JSON or Arrow, by content type), so FastAPI does not know
    its JSON schema: add PredictRequest to the OpenAPI components the route refers to."""
    generate = api.openapi

    def openapi() -> dict:
        if api.openapi_schema is None:
            schema = generate()
            model = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update({**model.pop("$defs", {}), "PredictRequest": model})
        return api.openapi_schema

    api.openapi = openapi


class FeatureLists:
    """The features each model asks for, on the request path. Resolving lists every
    manifest folder of the registry (about 1 ms: the largest per-request cost measured), so
    an answer, a 404 too, is reused for ``ttl_s``: a promotion is seen within that time."""

    def __init__(self, registry: Registry, ttl_s: float = 1.0, max_entries: int = 256,
                 clock: Callable[[], float] = time.monotonic):
        self._registry, self._ttl_s, self._max_entries, self._clock = registry, ttl_s, max_entries, clock
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

    def _resolve(self, model_type: str, timeframe: str, version: str | None) -> tuple[str, ...] | str:
        try:
            return self._registry.resolve(model_type, timeframe, version).feature_names
        except RegistryError as exc:
            return str(exc)


async def _predict(request: Request) -> Response:
    state = request.app.state
    kind = body_media_type(request.headers.get("content-type"))
    body = await request.body()
    if kind == "arrow":
        model = _model_from_query(request)
        columns, values = read_arrow_columns(body, state.config.max_rows)
        matrix, open_time = _columns_matrix(columns, values, state.feature_lists.needed(*model)), None
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
        raise ApiError(422, f"query.{given[0]}", "goes in the JSON body (the query is for Arrow bodies)")


def _parse_json(body: bytes) -> PredictRequest:
    # Pydantic's own JSON parser: FastAPI's json.loads + validation took 4 ms for 256 rows.
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _located("body", exc) from None


def _located(where: str, exc: ValidationError) -> RequestValidationError:
    return RequestValidationError([{"loc": (where, *e["loc"]), "msg": e["msg"], "type": e["type"]}
                                   for e in exc.errors(include_url=False)])


def _json_matrix(state, body: PredictRequest) -> tuple[np.ndarray, int | None]:
    config = state.config
    if body.candles is not None:
        if len(body.candles) > config.max_window:
            raise ApiError(413, "body.candles", f"at most {config.max_window} candles per window")
        return _window_features(body.candles)
    n = len(body.rows if body.rows is not None else body.features)
    if n > config.max_rows:
        raise ApiError(413, "body.rows" if body.rows is not None else "body.features",
                       f"at most {config.max_rows} rows per request, got {n}")
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
            what = f"unknown features {unknown[:5]}" if unknown else f"missing features {missing[:5]}"
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
        frame["low"] > frame[["open", "close"]].min(axis=1))
    if bad.any():
        raise ApiError(422, f"body.candles.{int(np.flatnonzero(bad)[0])}", "high/low do not bound the candle")
    if frame["taker_buy_base"].isna().all():
        frame = frame.drop(columns="taker_buy_base")
    last = compute_features(frame).to_numpy(copy=True)[-1:]
    if not warm_rows(last)[0]:
        raise ApiError(422, "body.candles", f"{len(candles)} candles are not enough to warm every feature up")
    return last, int(times[-1])


# --- WS /v1/stream --------------------------------------------------------------------------


async def _stream(socket: WebSocket) -> None:
    """Subscribe, get the latest snapshot at once, then every new prediction; a client that
    falls ``stream_queue`` messages behind is dropped rather than allowed to slow others."""
    state = socket.app.state
    try:
        caller_of(socket, state.keys, state.config.require_api_key)
    except ApiError as exc:
        await socket.close(code=1008, reason=exc.message)
        return
    await socket.accept()
    state.stream_clients += 1
    session = StreamSession(socket, state.backend, state.config.stream_queue)
    try:
        await session.run()
    finally:
        state.stream_clients -= 1


class StreamSession:
    def __init__(self, socket: WebSocket, backend: Backend, queue_size: int):
        self.socket, self.backend = socket, backend
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.symbols: set[str] | None = None
        self.timeframes: set[str] | None = None
        self.sent = self.dropped_for_lag = 0
        self.started = time.monotonic()

    async def run(self) -> None:
        tasks = [asyncio.create_task(t) for t in (self._read(), self._pump(), self._write())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await self.socket.close()

    async def _read(self) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await self._command(await self.socket.receive_text())

    async def _command(self, text: str) -> None:
        try:
            command = StreamCommand.model_validate_json(text)
        except ValidationError as exc:
            self._offer({"type": "error", "detail": exc.errors(include_url=False, include_context=False)})
            return
        if command.action == "subscribe":
            self.symbols = set(command.symbols) if command.symbols else None
            self.timeframes = set(command.timeframes) if command.timeframes else None
            rows = await self.backend.latest(None, None)
            self._offer({"type": "snapshot", "predictions": [to_prediction(r).model_dump() for r in rows
                                                               if self._wanted(r)]})
        elif command.action == "status":
            self._offer({"type": "status", "status": await self.backend.status()})
        else:
            self._offer({"type": "stats", "sent": self.sent, "queued": self.queue.qsize(),
                         "connected_s": round(time.monotonic() - self.started, 1)})

    async def _pump(self) -> None:
        cursor, _, _ = await self.backend.since(1 << 62, 0)  # start from now
        while True:
            cursor, rows, lost = await self.backend.since(cursor, 1.0)
            if lost:
                self._offer({"type": "gap", "detail": "some predictions were not streamed"})
            for row in rows:
                if self._wanted(row):
                    self._offer({"type": "prediction", **to_prediction(row).model_dump()})

    def _offer(self, message: dict) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            raise SlowClient from None

    async def _write(self) -> None:
        while True:
            await self.socket.send_json(await self.queue.get())
            self.sent += 1

    def _wanted(self, row: dict) -> bool:
        return (self.symbols is None or row["symbol"] in self.symbols) and (
            self.timeframes is None or row["timeframe"] in self.timeframes)


class SlowClient(Exception):
    """The client let its queue fill up: it is disconnected."""
