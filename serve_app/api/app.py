"""The public HTTP and WebSocket API, versioned under /v1 (FastAPI).

``create_api(config, backend, registry)`` builds the app around any ``Backend``: the Serve
ingress mounts it with Ray handles behind it, the uvicorn baseline and the fuzz test with
``LocalBackend``. Every invalid request is answered with a 4xx naming the field.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from orchestrator.config import ApiConfig
from orchestrator.models.registry import ModelRegistry
from serve_app.api.auth import API_KEY_HEADER, BodyLimit, RateLimiter, load_api_keys
from serve_app.api.backend import Backend, BackendError
from serve_app.api.predict import FeatureLists
from serve_app.api.routes import add_routes, document_predict_body
from serve_app.api.schemas import ApiError


def create_api(config: ApiConfig, backend: Backend, registry: ModelRegistry) -> FastAPI:
    api = FastAPI(
        title="tickcast",
        version="1.0.0",
        description="Real-time market predictions served by Ray Serve.",
    )
    api.state.backend, api.state.registry, api.state.config = backend, registry, config
    api.state.keys = load_api_keys(config.api_keys_env)
    api.state.admin_keys = load_api_keys(config.admin_keys_env)
    api.state.limiter = RateLimiter(config.rate_limit_per_s, config.rate_limit_burst)
    api.state.stream_clients = 0
    api.state.feature_lists = FeatureLists(registry)
    if config.cors_origins:
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[API_KEY_HEADER, "Content-Type"],
        )
    api.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    _add_error_handlers(api)
    add_routes(api)
    document_predict_body(api)
    return api


def _add_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what: echoing the input back could itself fail (NaN is not JSON).
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        detail = [{"loc": exc.field.split("."), "msg": exc.message, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=exc.status, headers=_retry_after(exc))

    @api.exception_handler(BackendError)
    async def _backend_error(_: Request, exc: BackendError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=getattr(exc, "status", 502))


def _retry_after(exc: ApiError) -> dict[str, str]:
    return {"Retry-After": exc.message.rsplit(" ", 2)[-2]} if exc.status == 429 else {}
