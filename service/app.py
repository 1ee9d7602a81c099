"""The FastAPI app factory: one router per resource, the store injected as a session
dependency (overridable in tests), security headers on every answer.

    create_app("sqlite:///dayone.db", ingest_token="...")

The ingest token comes from the argument or `$DAYONE_INGEST_TOKEN`; without one, HTTP ingest is
switched off (403) and the site is read-only.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from matrix.store import open_store
from service import views
from service.render import CSP, STATIC
from service.routers import api, badges, feed, health, pages

# Swagger UI and ReDoc come from a CDN with inline bootstrap scripts; they show no stored data,
# so they get a looser policy of their own.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")

DESCRIPTION = """Day-one compatibility of open-weight models across inference engines.

Every HTML page has a JSON twin (append `.json`). The `/api/v1` endpoints answer JSON only.
Model ids contain slashes (`org/name`); in page paths they are written as they are, other
characters as `~XX` (UTF-8 hex), see `service/links.py`. CI jobs report results with
`POST /api/v1/results` and a bearer token."""


def create_app(
    db_url: str | None = None, *, ingest_token: str | None = None, max_body_bytes: int | None = None
) -> FastAPI:
    token = ingest_token if ingest_token is not None else os.environ.get("DAYONE_INGEST_TOKEN")

    def openapi() -> dict:
        # The ingest body is the result contract itself: publish it as a component.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["ResultRecord"] = (
                api._record_schema()
            )
            app.openapi_schema = schema
        return app.openapi_schema

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.store.close()

    app = FastAPI(
        title="dayone",
        lifespan=lifespan,
        version=_version(),
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "api", "description": "JSON API (v1)"},
            {"name": "ingest", "description": "Results over HTTP"},
            {"name": "pages", "description": "HTML pages and JSON twins"},
            {"name": "badges"},
            {"name": "feed"},
            {"name": "health"},
        ],
    )
    app.state.store = open_store(db_url)
    app.state.ingest_token = token or None
    app.state.history_cache = views.HistoryCache()
    app.state.max_body_bytes = max_body_bytes or api.MAX_BODY_BYTES

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if "\x00" in request.url.path or "%00" in str(request.url.query):
            # NUL reaches no handler: PostgreSQL refuses it in text, so it could only fail.
            response: Response = JSONResponse({"detail": "NUL character in the request"}, 400)
        else:
            response = await call_next(request)
        docs = request.url.path.startswith(DOCS_PATHS)
        response.headers.setdefault("Content-Security-Policy", DOCS_CSP if docs else CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default handler echoes the input back; keep that but make it JSON-safe.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (health, api, badges, feed, pages):  # pages last: its paths are catch-alls
        app.include_router(module.router)

    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dayone")
    except Exception:  # not installed (running from a checkout)
        return "0"
