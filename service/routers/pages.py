"""HTML pages, each with a `.json` twin rendered from the same data (datasette style).

Paths hold model ids with their slashes (`/models/org/name`, `/cells/org/name/vllm`); other
characters are `~XX` escapes (service/links.py). An id is only ever a query parameter to the
store, never a file path, so no path here can reach the file system.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from matrix import archmap
from service import render, views
from service.deps import SessionDep
from service.links import (
    Links,
    arch_path,
    cell_path,
    engine_path,
    model_path,
    release_path,
    split_twin,
    unslug,
)

router = APIRouter(tags=["pages"])


def _blank(value: Optional[str]) -> Optional[str]:
    return value or None  # an empty form field means "any"


def matrix_params(
    family: Annotated[Optional[str], Query(max_length=200, description="Model family")] = None,
    engine: Annotated[Optional[str], Query(max_length=200, description="Engine name")] = None,
    hardware: Annotated[Optional[str], Query(max_length=200, description="Hardware")] = None,
    tier: Annotated[Optional[str], Query(max_length=20, description="arch or full")] = None,
    status: Annotated[Optional[str], Query(max_length=20, description="Cell status")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = views.PER_PAGE,
    nights: Annotated[int, Query(ge=0, le=60, description="Nights in each strip")] = (views.STRIP_NIGHTS),
) -> dict[str, Any]:
    return {
        "filters": views.Filters(
            _blank(family), _blank(engine), _blank(hardware), _blank(tier), _blank(status)
        ),
        "page": page,
        "per_page": per_page,
        "nights": nights,
    }


MatrixParams = Annotated[dict[str, Any], Depends(matrix_params)]


def map_params(
    q: Annotated[
        Optional[str], Query(max_length=200, description="Architecture or release substring")
    ] = None,
    engine: Annotated[Optional[str], Query(max_length=200, description="Engine name")] = None,
    status: Annotated[Optional[str], Query(max_length=20, description="Cell status")] = None,
    lineage: Annotated[Optional[str], Query(max_length=20, description="release or synthetic")] = None,
    hardware: Annotated[Optional[str], Query(max_length=200, description="Hardware")] = None,
    tier: Annotated[Optional[str], Query(max_length=20, description="arch or full")] = None,
) -> archmap.MapFilters:
    return archmap.MapFilters(
        _blank(q and q.strip()),
        _blank(engine),
        _blank(status),
        _blank(lineage),
        _blank(hardware),
        _blank(tier),
    )


MapParams = Annotated[archmap.MapFilters, Depends(map_params)]


def page(
    template: str, data: dict[str, Any] | None, here: str, as_json: bool, status_code: int = 200
) -> Response:
    if data is None:
        return not_found(here, as_json)
    if as_json:
        return JSONResponse(data, status_code=status_code)
    return HTMLResponse(render.html(template, data, Links(here)), status_code=status_code)


def not_found(
    here: str,
    as_json: bool,
    *,
    title: str = "Not found",
    detail: str = "dayone has no results for this.",
    back: tuple[str, str] | None = None,
) -> Response:
    """A 404: JSON for a twin, else a page saying what is missing and where to look instead
    (`back`: (link name, label), a method of Links; the matrix when None)."""
    if as_json:
        return JSONResponse({"detail": detail if title != "Not found" else "not found"}, status_code=404)
    links = Links(here)
    where, label = back or ("home", "Back to the matrix")
    body = render.html(
        "error.html",
        {"title": title, "detail": detail, "back": {"href": getattr(links, where)(), "label": label}},
        links,
    )
    return HTMLResponse(body, status_code=404)


def _matrix(request: Request, session: Any, params: dict[str, Any]) -> dict[str, Any]:
    return views.matrix_view(session, **params, cache=request.app.state.history_cache)


def cached(request: Request, session: Any, key: tuple[str, ...], compute: Any) -> Any:
    """A view about one model from the app's history cache (exact: dropped when results for
    that model arrive), with its staleness brought up to now."""
    return views.fresh(request.app.state.history_cache.view(session, key, compute))


@router.get("/", response_class=HTMLResponse, summary="The compatibility matrix")
def matrix_page(request: Request, session: SessionDep, params: MatrixParams) -> Response:
    return page("matrix.html", _matrix(request, session, params), "", False)


@router.get("/index.json", summary="The compatibility matrix (JSON twin of /)")
def matrix_json(request: Request, session: SessionDep, params: MatrixParams) -> Response:
    return page("matrix.html", _matrix(request, session, params), "", True)


def map_data(request: Request, session: Any, filters: archmap.MapFilters) -> dict[str, Any]:
    return views.map_view(session, filters, cache=request.app.state.history_cache)


@router.get(
    "/map",
    response_class=HTMLResponse,
    summary="The architecture map: architecture x engine, stages, release timelines",
)
def map_page(request: Request, session: SessionDep, filters: MapParams) -> Response:
    return page("map.html", map_data(request, session, filters), "map", False)


@router.get("/map.json", summary="The architecture map (JSON twin of /map, as `dayone map --json`)")
def map_json(request: Request, session: SessionDep, filters: MapParams) -> Response:
    return page("map.html", map_data(request, session, filters), "map", True)


def arch_data(request: Request, session: Any, arch: str) -> dict[str, Any] | None:
    return request.app.state.history_cache.view(
        session, ("arch", archmap.ARCH_PREFIX + arch), lambda: views.arch_view(session, arch)
    )


def no_such_arch(arch: str, as_json: bool) -> Response:
    return not_found(
        arch_path(arch),
        as_json,
        title="No such architecture",
        detail=f"dayone has no results for the architecture {arch!r}: the "
        "architecture map lists every one the sweep has probed.",
        back=("map", "See the architecture map"),
    )


@router.get(
    "/map/{name}",
    response_class=HTMLResponse,
    summary="One architecture: every engine's stages, release timeline, lineage, reds "
    "with their bare reproduce command (append .json)",
    responses={404: {"description": "no such architecture"}},
)
def arch_page(request: Request, session: SessionDep, name: str) -> Response:
    name, as_json = split_twin(name)
    arch = unslug(name)
    data = arch_data(request, session, arch)
    if data is None:
        return no_such_arch(arch, as_json)
    return page("arch.html", data, arch_path(arch), as_json)


def search_params(
    q: Annotated[
        Optional[str],
        Query(
            max_length=200, description="A model id, type or family, or an architecture (any part, any case)"
        ),
    ] = None,
) -> Optional[str]:
    return q


SearchParam = Annotated[Optional[str], Depends(search_params)]


@router.get(
    "/search",
    response_class=HTMLResponse,
    summary="Models and architectures by name (the header's search box)",
)
def search_page(session: SessionDep, q: SearchParam) -> Response:
    return page("search.html", views.search_view(session, q), "search", False)


@router.get("/search.json", summary="Search (JSON twin of /search)")
def search_json(session: SessionDep, q: SearchParam) -> Response:
    return page("search.html", views.search_view(session, q), "search", True)


@router.get(
    "/models/{path:path}",
    response_class=HTMLResponse,
    summary="One model: every engine x stage, history (append .json for JSON)",
    responses={404: {"description": "no such model"}},
)
def model_page(request: Request, session: SessionDep, path: str) -> Response:
    path, as_json = split_twin(path)
    model_id = unslug(path)
    data = views.model_page_view(session, model_id, request.app.state.history_cache)
    return page("model.html", data, model_path(model_id), as_json)


@router.get(
    "/engines/{name}",
    response_class=HTMLResponse,
    summary="One engine: every version, what it fixed and broke (append .json)",
    responses={404: {"description": "no such engine"}},
)
def engine_page(session: SessionDep, name: str) -> Response:
    name, as_json = split_twin(name)
    engine = unslug(name)
    return page("engine.html", views.engine_view(session, engine), engine_path(engine), as_json)


@router.get(
    "/engines/{name}/{version}",
    response_class=HTMLResponse,
    summary="One engine release against the one before: fixed, broke, newly green (append .json)",
    responses={404: {"description": "no such engine release"}},
)
def release_page(session: SessionDep, name: str, version: str) -> Response:
    version, as_json = split_twin(version)
    engine, release = unslug(name), unslug(version)
    return page(
        "release.html",
        views.engine_release_view(session, engine, release),
        release_path(engine, release),
        as_json,
    )


@router.get(
    "/cells/{path:path}",
    response_class=HTMLResponse,
    summary="One model in one engine: full history, logs, reproduce (append .json)",
    responses={404: {"description": "no such cell"}},
)
def cell_page(request: Request, session: SessionDep, path: str) -> Response:
    path, as_json = split_twin(path)
    model_part, _, engine_part = path.rpartition("/")
    if not model_part or not engine_part:
        return not_found("cells/x/y", as_json)
    model_id, engine = unslug(model_part), unslug(engine_part)
    data = cached(
        request,
        session,
        ("cell", model_id, engine, "500"),
        lambda: views.cell_view(session, model_id, engine),
    )
    return page("cell.html", data, cell_path(model_id, engine), as_json)
