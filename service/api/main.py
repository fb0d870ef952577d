"""The FastAPI application: routes, authentication and the translation of our errors to HTTP."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from gradsweep.service.api import dashboard
from gradsweep.service.api.deps import get_caller, get_storage
from gradsweep.service.api.limits import BodySizeLimit
from gradsweep.service.api.routes import access, health, plots, runs, sweeps
from gradsweep.service.api.schemas import ERROR_RESPONSES
from gradsweep.service.api.security import CrossSiteGuard, HostGuard, SecurityHeaders, allowed_hosts
from gradsweep.service.settings import get_settings
from gradsweep.service.storage import DatabaseUnavailable, NotFound, SchemaOutOfDate, SweepActive, TokenExists
from gradsweep.worker.queue import BrokerUnavailable


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Refuse to serve an un-migrated database: every request would fail later, less clearly.
    app.dependency_overrides.get(get_storage, get_storage)().check_schema()
    yield


def create_app() -> FastAPI:
    # /docs and /redoc load Swagger UI and ReDoc from the installed package, not from a CDN, so
    # they work with no internet. Like /openapi.json they stay open: they hold no data, and the
    # token guard is on every data router, not on the app.
    app = FastAPIOffline(
        title="gradsweep",
        summary="Hyperparameter sweeps of a linear regression trained by our own autodiff engine.",
        lifespan=lifespan,
        static_url="/static-offline-docs",
    )
    settings = get_settings()
    # The last added runs first: security headers on every answer, refusals included.
    if settings.cors_origins:  # closed unless configured
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(CrossSiteGuard, trusted_origins=settings.cors_origins)
    app.add_middleware(HostGuard, hosts=allowed_hosts(settings.api_host, settings.allowed_hosts))
    app.add_middleware(SecurityHeaders)
    # Every data route needs a token once there is one; those that change anything, a write token.
    protected = [Depends(get_caller)]
    for router in (sweeps.router, runs.router, plots.router, access.router):
        app.include_router(router, dependencies=protected, responses=ERROR_RESPONSES)
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.mount("/ui/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # Name the field and the rule, but do not echo the input: it may be NaN (not JSON)
        # or a list of a million entries.
        detail = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 405:
            # Starlette's Allow names the methods of the first route on the path only (POST for
            # /sweeps, which also has GET); name every route's, as HTTP asks.
            allowed = sorted({method.upper() for path, operations in app.openapi()["paths"].items()
                              if compile_path(path)[0].match(request.url.path) for method in operations})
            if allowed:
                error.headers = {**(error.headers or {}), "Allow": ", ".join(allowed)}
        return await http_exception_handler(request, error)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404)

    @app.exception_handler(SweepActive)
    @app.exception_handler(TokenExists)
    async def conflict(request: Request, error: SweepActive | TokenExists) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    @app.exception_handler(DatabaseUnavailable)
    async def database_down(request: Request, error: DatabaseUnavailable) -> JSONResponse:
        return JSONResponse({"detail": "the database is unavailable; try again shortly"}, status_code=503)

    @app.exception_handler(SchemaOutOfDate)
    async def schema_out_of_date(request: Request, error: SchemaOutOfDate) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503)

    @app.exception_handler(BrokerUnavailable)
    async def broker_down(request: Request, error: BrokerUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": "the job queue's broker is unavailable; nothing was stored, try again shortly"}, status_code=503
        )

    return app
