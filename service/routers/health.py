"""`/healthz`: the process answers and the store can be read."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from matrix import queries
from service.deps import SessionDep

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="Liveness and store check",
    responses={503: {"description": "the store cannot be read"}},
)
def healthz(session: SessionDep) -> JSONResponse:
    try:
        queries.ping(session)
    except SQLAlchemyError as exc:
        return JSONResponse({"status": "unavailable", "store": type(exc).__name__}, 503)
    return JSONResponse({"status": "ok", "store": session.get_bind().dialect.name})
