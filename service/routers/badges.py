"""`/badge/{model}/{engine}.svg`: the cell's current status as a shields-style badge."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service import badges, views
from service.deps import SessionDep
from service.links import split_twin, unslug

router = APIRouter(tags=["badges"])


def cell_badge(session, model_id: str, engine: str) -> badges.Badge:
    cell = views.current_cell(session, model_id, engine)
    if cell is None:
        return badges.badge_for(engine, None)
    return badges.badge_for(engine, cell["status"], cell["engine_version"])


@router.get(
    "/badge/{path:path}",
    summary="Status badge of a cell (SVG)",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}, 404: {"description": "not a badge path"}},
)
def badge(session: SessionDep, path: str) -> Response:
    path, is_svg = split_twin(path, ".svg")
    model_part, _, engine_part = path.rpartition("/")
    if not is_svg or not model_part or not engine_part:
        return Response("badge paths are /badge/MODEL/ENGINE.svg", status_code=404, media_type="text/plain")
    b = cell_badge(session, unslug(model_part), unslug(engine_part))
    # A cell without results still answers with a grey "no data" badge (an embedded badge
    # should never show as a broken image).
    return Response(badges.svg(b), media_type="image/svg+xml", headers={"Cache-Control": "max-age=300"})
