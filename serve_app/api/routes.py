"""The routes of /v1, /healthz and /readyz; the predict body and the stream live beside."""

from __future__ import annotations

from typing import Literal

from fastapi import Depends, FastAPI, Path, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse

from orchestrator.models.registry import ModelRegistry
from orchestrator.sinks.history import BadCursor, HistoryQuery
from serve_app.api.auth import admin_guard, guard
from serve_app.api.predict import predict_response
from serve_app.api.schemas import (
    ARROW_STREAM,
    EXCHANGE_PATTERN,
    FEED_PATTERN,
    SYMBOL_PATTERN,
    TIMEFRAME_PATTERN,
    ApiError,
    ArrowQuery,
    Candle,
    CandleSeries,
    FeedSymbols,
    LatestPredictions,
    PredictionPage,
    PredictRequest,
    PredictResponse,
    Scoreboard,
    SymbolChange,
    SymbolChangeResult,
    query_parameters,
    to_prediction,
    to_scoreboard,
)
from serve_app.api.static import static_response
from serve_app.api.stream import serve_stream

# An offset page holds offset + limit rows in memory while it is read: deeper pages use the
# cursor, which costs only the page.
MAX_OFFSET = 100_000


def _finite(value):
    """NaN (a missing volume) is not JSON: None instead."""
    return None if isinstance(value, float) and value != value else value


def add_routes(api: FastAPI) -> None:
    @api.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @api.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        ready, detail = await request.app.state.backend.ready()
        return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)

    @api.get(
        "/v1/predictions/latest",
        response_model=LatestPredictions,
        tags=["predictions"],
        dependencies=[Depends(guard)],
    )
    async def latest(
        request: Request,
        symbol: str | None = Query(None, pattern=SYMBOL_PATTERN, description="e.g. BTC/USDT"),
        timeframe: str | None = Query(None, pattern=TIMEFRAME_PATTERN),
    ) -> LatestPredictions:
        rows = await request.app.state.backend.latest(symbol, timeframe)
        return LatestPredictions(count=len(rows), predictions=[to_prediction(r) for r in rows])

    @api.get(
        "/v1/predictions",
        response_model=PredictionPage,
        tags=["predictions"],
        dependencies=[Depends(guard)],
    )
    async def history(
        request: Request,
        symbol: str | None = Query(None, pattern=SYMBOL_PATTERN),
        timeframe: str | None = Query(None, pattern=TIMEFRAME_PATTERN),
        model_id: str | None = Query(
            None, pattern=r"^[a-z]{1,16}-(" + TIMEFRAME_PATTERN[2:-2] + ")$"
        ),
        start: int | None = Query(
            None, ge=0, lt=10**14, description="open time >= start (epoch ms)"
        ),
        end: int | None = Query(None, ge=0, lt=10**14, description="open time < end (epoch ms)"),
        limit: int | None = Query(None, ge=1, le=10_000),
        order: Literal["asc", "desc"] = Query(
            "asc", description="asc: oldest first; desc: newest first"
        ),
        cursor: str | None = Query(
            None, max_length=512, description="next_cursor of the previous page"
        ),
        offset: int = Query(
            0, ge=0, le=MAX_OFFSET, description="rows to skip; deeper pages go by cursor"
        ),
        count: bool = Query(False, description="also count every matching row (slower)"),
        role: Literal["production", "shadow", "canary"] | None = Query(
            None,
            description="a role's events, published or not (default: the published signals; "
            "docs/models.md#champion-and-challenger)",
        ),
    ) -> PredictionPage:
        limit = limit or request.app.state.config.page_size
        query = HistoryQuery(
            symbol,
            timeframe,
            model_id,
            start,
            end,
            limit,
            offset,
            cursor,
            order == "desc",
            count,
            role,
        )
        try:
            page = await request.app.state.backend.history(query)
        except BadCursor as exc:
            raise ApiError(422, "query.cursor", str(exc)) from None
        following = offset + len(page.rows)
        return PredictionPage(
            total=page.total,
            offset=offset,
            limit=limit,
            next_offset=following if page.next_cursor and following <= MAX_OFFSET else None,
            next_cursor=page.next_cursor,
            skipped_files=page.skipped_files,
            predictions=[to_prediction(r) for r in page.rows],
        )

    # The guard, the query and the body are read by hand (documented by PREDICT_DOC): FastAPI's
    # dependency and parameter solving was a fifth of a single-row request's cost.
    @api.post(
        "/v1/predict",
        response_model=PredictResponse,
        tags=["predictions"],
        openapi_extra=PREDICT_DOC,
    )
    async def predict(request: Request) -> Response:
        await guard(request)
        return await predict_response(request)

    @api.get("/v1/models", tags=["models"], dependencies=[Depends(guard)])
    async def models(request: Request) -> dict:
        served = await request.app.state.backend.served_models()
        return {"models": _model_catalog(request.app.state.registry, served)}

    @api.get("/v1/status", tags=["ops"], dependencies=[Depends(guard)])
    async def status(request: Request) -> dict:
        state = request.app.state
        served = await state.backend.served_models()
        return {
            **await state.backend.status(),
            "api": {"stream_clients": state.stream_clients, "served_models": served},
        }

    @api.get(
        "/v1/candles", response_model=CandleSeries, tags=["market"], dependencies=[Depends(guard)]
    )
    async def candles(
        request: Request,
        symbol: str = Query(pattern=SYMBOL_PATTERN, description="e.g. BTC/USDT"),
        timeframe: str = Query(pattern=TIMEFRAME_PATTERN),
        exchange: str = Query(pattern=EXCHANGE_PATTERN, description="e.g. binance"),
        limit: int = Query(200, ge=1, le=5000, description="newest candles, returned oldest first"),
    ) -> CandleSeries:
        found = await request.app.state.backend.candles(exchange, symbol, timeframe, limit)
        if found is None:
            raise ApiError(404, "query.symbol", f"no live series {exchange} {symbol} {timeframe}")
        rows = [
            dict(zip(found, values, strict=True)) for values in zip(*found.values(), strict=True)
        ]
        series = [Candle(**{k: _finite(v) for k, v in row.items()}) for row in rows]
        return CandleSeries(
            exchange=exchange, symbol=symbol, timeframe=timeframe, count=len(series), candles=series
        )

    @api.get(
        "/v1/scoreboard", response_model=Scoreboard, tags=["models"], dependencies=[Depends(guard)]
    )
    async def scoreboard(request: Request) -> Scoreboard:
        backend = request.app.state.backend
        return to_scoreboard(await backend.outcomes(), await backend.served_models())

    @api.get(
        "/v1/admin/feeds/{feed}/symbols",
        response_model=FeedSymbols,
        tags=["admin"],
        dependencies=[Depends(admin_guard)],
    )
    async def feed_symbols(
        request: Request, feed: str = Path(pattern=FEED_PATTERN, description="e.g. replay-0")
    ) -> FeedSymbols:
        return FeedSymbols(**await request.app.state.backend.feed_symbols(feed))

    @api.post(
        "/v1/admin/feeds/{feed}/symbols",
        response_model=SymbolChangeResult,
        tags=["admin"],
        dependencies=[Depends(admin_guard)],
    )
    async def add_symbols(
        request: Request, body: SymbolChange, feed: str = Path(pattern=FEED_PATTERN)
    ) -> SymbolChangeResult:
        """Start predicting ``symbols`` on a running feed: each warms up on its history and is
        predicted from its first live candle after that. Unknown symbols: 422 naming them."""
        backend = request.app.state.backend
        changed = await backend.change_symbols(feed, body.symbols, [], body.warmup_minutes)
        return SymbolChangeResult(**changed)

    @api.delete(
        "/v1/admin/feeds/{feed}/symbols",
        response_model=SymbolChangeResult,
        tags=["admin"],
        dependencies=[Depends(admin_guard)],
    )
    async def remove_symbols(
        request: Request, body: SymbolChange, feed: str = Path(pattern=FEED_PATTERN)
    ) -> SymbolChangeResult:
        """Stop ``symbols``: their state leaves the shards and the checkpoints, their latest
        predictions leave /v1/predictions/latest (the log keeps their history)."""
        changed = await request.app.state.backend.change_symbols(feed, [], body.symbols, None)
        return SymbolChangeResult(**changed)

    @api.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        return static_response("index.html")

    @api.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str) -> Response:
        return static_response(name)

    @api.websocket("/v1/stream")
    async def stream(socket: WebSocket) -> None:
        await serve_stream(socket)


def _model_catalog(registry: ModelRegistry, served: dict[str, str]) -> list[dict]:
    return [
        {
            "model_id": m.model_id,
            "model_type": m.model_type,
            "timeframe": m.timeframe,
            "version": m.version,
            "stage": m.stage,
            "serving": served.get(m.model_id) == m.version,
            "feature_names": list(m.feature_names),
            "outputs": (getattr(m, "outputs", None) or {}).get("names"),
            "metrics": m.metrics,
            # the map's knots stay in the manifest; its evidence is shown
            "calibration": {
                k: v
                for k, v in (getattr(m, "calibration", None) or {}).items()
                if k not in ("x", "y")
            }
            or None,
            "training_range": ((getattr(m, "training", None) or {}).get("range")),
        }
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
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


def document_predict_body(api: FastAPI) -> None:
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
