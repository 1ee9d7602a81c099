"""The JSON API, version 1: read endpoints over the store and HTTP ingest for CI jobs."""

from __future__ import annotations

import datetime as dt
import hmac
import json
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from matrix import summary as S
from matrix.ingest import ingest_records, validator
from service import views
from service.deps import SessionDep
from service.links import Links
from service.routers.pages import MapParams, MatrixParams, SearchParam, _matrix, arch_data, cached, map_data

router = APIRouter(prefix="/api/v1", tags=["api"])

MAX_BODY_BYTES = 16 * 2**20
MAX_RECORDS = 10_000
Text = Annotated[Optional[str], Query(max_length=512)]


def _json(data: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status_code)


def _found(data: Any, what: str) -> JSONResponse:
    """`data` as JSON, or 404 "no such <what>" where the view found nothing."""
    if data is None:
        raise HTTPException(404, f"no such {what}")
    return _json(data)


@router.get("/matrix", summary="The matrix: models x engines, current state per cell")
def api_matrix(request: Request, session: SessionDep, params: MatrixParams) -> JSONResponse:
    return _json(_matrix(request, session, params))


@router.get("/map", summary="The architecture map (as `dayone map --json`, with timelines)")
def api_map(request: Request, session: SessionDep, filters: MapParams) -> JSONResponse:
    return _json(map_data(request, session, filters))


@router.get(
    "/map/{arch}",
    summary="One architecture (the JSON of /map/{arch})",
    responses={404: {"description": "no such architecture"}},
)
def api_arch(request: Request, session: SessionDep, arch: str) -> JSONResponse:
    return _found(arch_data(request, session, arch), "architecture")


@router.get(
    "/search",
    summary="Models and architectures by name",
    description="Any part of a model's id, type or family, or of an architecture, any "
    "case; exact names first. Each result's `href` is its page.",
)
def api_search(
    session: SessionDep,
    q: SearchParam = None,
    limit: Annotated[int, Query(ge=1, le=100)] = views.SEARCH_LIMIT,
) -> JSONResponse:
    data = views.search_view(session, q, limit)
    links = Links()
    for hit in data["results"]:
        hit["href"] = (
            links.arch(hit["name"]) if hit["kind"] == "architecture" else links.model(hit["name"])
        ).removeprefix(".")
    return _json(data)


@router.get("/models", summary="Models, newest first (grouped by family)")
def api_models(
    session: SessionDep,
    family: Text = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> JSONResponse:
    return _json(views.models_list(session, family=family, limit=limit, offset=offset))


@router.get(
    "/models/{model_id:path}",
    summary="One model (id with its slashes)",
    responses={404: {"description": "no such model"}},
)
def api_model(request: Request, session: SessionDep, model_id: str) -> JSONResponse:
    return _found(views.model_page_view(session, model_id, request.app.state.history_cache), "model")


@router.get("/engines", summary="Engines with their versions and hardware")
def api_engines(session: SessionDep) -> JSONResponse:
    return _json(views.engines_list(session))


@router.get(
    "/engines/{name}",
    summary="One engine: per version, what it fixed and broke",
    responses={404: {"description": "no such engine"}},
)
def api_engine(session: SessionDep, name: str) -> JSONResponse:
    return _found(views.engine_view(session, name), "engine")


@router.get(
    "/engines/{name}/{version}/diff",
    summary="One engine release against the one before: what it fixed, broke "
    "(regressions flagged) and newly greened",
    responses={404: {"description": "no such engine release"}},
)
def api_release_diff(session: SessionDep, name: str, version: str) -> JSONResponse:
    return _found(views.engine_release_view(session, name, version), "engine release")


@router.get(
    "/compat",
    summary="Support data in MDN browser-compat-data's shape",
    description="Per architecture and model, per engine: `version_added`, "
    "`version_removed`, `partial_implementation` with `notes` over the "
    "engine releases probed; the same document `dayone export --data` "
    "writes as data.json (schema: /api/v1/compat/schema).",
)
def api_compat(session: SessionDep) -> JSONResponse:
    return _json(views.compat_view(session))


@router.get("/compat/schema", summary="The JSON Schema of /api/v1/compat")
def api_compat_schema() -> JSONResponse:
    from matrix.compat_data import schema

    return _json(schema())


@router.get(
    "/cells",
    summary="One model in one engine: state, summary, history",
    responses={404: {"description": "no such cell"}},
)
def api_cell(
    request: Request,
    session: SessionDep,
    model: Annotated[str, Query(min_length=1, max_length=512)],
    engine: Annotated[str, Query(min_length=1, max_length=128)],
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> JSONResponse:
    return _found(
        cached(
            request,
            session,
            ("cell", model, engine, str(limit)),
            lambda: views.cell_view(session, model, engine, limit=limit),
        ),
        "cell",
    )


def _since(since: Optional[str]) -> Optional[dt.datetime]:
    if not since:
        return None
    try:
        return S.parse_time(since if "T" in since or " " in since else since + "T00:00:00")
    except ValueError:
        raise HTTPException(422, "since: not an ISO 8601 date or time")


@router.get(
    "/results",
    summary="Stored result records (the contract), newest first",
    description="Filter by model, engine (`NAME` or `NAME==VERSION`), stage, status "
    "and `since` (ISO date or time, UTC when naive); paginate with "
    "`limit` and `offset` (the answer's `next` is the following page).",
)
def api_results(
    request: Request,
    session: SessionDep,
    model: Text = None,
    engine: Text = None,
    stage: Annotated[Optional[str], Query(max_length=64)] = None,
    status: Annotated[Optional[str], Query(max_length=16)] = None,
    since: Annotated[Optional[str], Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> JSONResponse:
    records = views.results_page(
        session,
        model=model,
        engine=engine,
        stage=stage,
        status=status,
        since=_since(since),
        limit=limit,
        offset=offset,
    )
    following = None
    if len(records) == limit:
        following = str(request.url.include_query_params(offset=offset + limit))
    return _json({"results": records, "offset": offset, "limit": limit, "next": following})


@router.get(
    "/results/{result_id}",
    summary="One stored record by its id (without `output`)",
    responses={404: {"description": "no such result"}},
)
def api_result(session: SessionDep, result_id: Annotated[int, Path(ge=1, le=2**62)]) -> JSONResponse:
    return _found(views.result_record(session, result_id), "result")


@router.get(
    "/summaries",
    summary="Derived summaries per cell of one model",
    description="Latest status, supported since, days to green, failing since, last "
    "pass, regressions, flaky stages, staleness (matrix/summary.py).",
)
def api_summaries(
    request: Request,
    session: SessionDep,
    model: Annotated[str, Query(min_length=1, max_length=512)],
    engine: Text = None,
) -> JSONResponse:
    return _json(
        cached(
            request,
            session,
            ("summaries", model, engine or ""),
            lambda: views.summaries_view(session, model, engine),
        )
    )


# Ingest


def _record_schema() -> dict[str, Any]:
    schema = dict(validator().schema)
    schema.pop("$schema", None)
    return schema


def require_token(request: Request) -> None:
    """Bearer token, compared in constant time. No token configured: ingest is off."""
    expected = request.app.state.ingest_token
    if not expected:
        raise HTTPException(403, "HTTP ingest is disabled (set DAYONE_INGEST_TOKEN)")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), expected.encode("utf-8")
    ):
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": 'Bearer realm="dayone"'}
        )


async def _body(request: Request) -> bytes:
    limit = request.app.state.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_batch(body: bytes) -> list[Any]:
    """A JSON object, a JSON array of them, or JSON lines; ValueError says why not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8")
    if not text.strip():
        raise ValueError("empty body")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except ValueError:
        data = None
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise ValueError("body is neither JSON nor JSON lines")
        out = []
        for n, line in enumerate(lines, start=1):
            try:
                out.append(json.loads(line, parse_constant=_no_constant))
            except ValueError as err:
                raise ValueError(f"line {n}: not JSON ({err})")
        return out
    return data if isinstance(data, list) else [data]


INGEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/ResultRecord"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/ResultRecord"}},
                ]
            }
        },
        "application/x-ndjson": {"schema": {"type": "string", "description": "one record per line"}},
    },
}


@router.post(
    "/results",
    tags=["ingest"],
    summary="Ingest result records (bearer token)",
    description="A record, a JSON array of records, or JSON lines, each valid against the "
    "result contract. Idempotent: a record already stored counts as a duplicate. "
    "200 with a report when at least one record was good (the bad ones listed "
    "with their 0-based position), 422 when none was.",
    dependencies=[Depends(require_token)],
    openapi_extra={"requestBody": INGEST_BODY},
    responses={
        401: {"description": "missing or wrong token"},
        403: {"description": "ingest disabled"},
        413: {"description": "too large"},
        422: {"description": "nothing valid to store"},
        503: {"description": "the store is busy; retry"},
    },
)
async def api_ingest(request: Request) -> JSONResponse:
    body = await _body(request)
    try:
        records = parse_batch(body)
    except ValueError as why:
        raise HTTPException(400, str(why))
    if len(records) > MAX_RECORDS:
        raise HTTPException(413, f"more than {MAX_RECORDS} records in one request")
    store = request.app.state.store
    from starlette.concurrency import run_in_threadpool

    def write() -> dict[str, Any]:
        with store.writing() as session:
            return ingest_records(session, records, keep_logs=False).as_dict()

    try:
        report = await run_in_threadpool(write)
    except OperationalError:
        raise HTTPException(503, "the store is busy; retry", headers={"Retry-After": "5"})
    stored = report["inserted"] + report["duplicates"]
    return _json(report, 200 if stored or not records else 422)
