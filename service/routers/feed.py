"""`/feed.atom`: regressions and new greens of the last days."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from service import feed
from service.deps import SessionDep
from service.links import Links

router = APIRouter(tags=["feed"])


@router.get(
    "/feed.atom",
    summary="Atom feed of regressions and new greens",
    response_class=Response,
    responses={200: {"content": {"application/atom+xml": {}}}},
)
def atom_feed(session: SessionDep, days: Annotated[int, Query(ge=1, le=60)] = feed.WINDOW_DAYS) -> Response:
    data = feed.feed_view(session, days=days)
    return Response(
        feed.atom(data, Links()), media_type="application/atom+xml", headers={"Cache-Control": "max-age=600"}
    )
