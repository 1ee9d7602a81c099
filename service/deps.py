"""Dependencies the routers share: a store session per request (tests may override it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.store.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
