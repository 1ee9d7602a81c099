"""One renderer: a page's data dict becomes HTML (Jinja2, autoescaped) or its JSON twin.

The live routers and the static export both call `html` / `json_text`, so the exported site is
the served site. Every string from a record (model ids, messages, logs) is untrusted: templates
are autoescaped (HTML, SVG and Atom alike) and nothing is marked safe.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from service.links import Links
from service.views import PER_PAGE, STRIP_NIGHTS

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"

# No inline script or style anywhere (the templates use classes), so the policy can be strict.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=select_autoescape(["html", "svg", "atom", "xml"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["date"] = lambda v: (v or "")[:10]
    env.filters["when"] = lambda v: (v or "").replace("T", " ").replace("Z", "")[:16]
    env.globals["pager_query"] = pager_query
    return env


def pager_query(data: dict[str, Any], page: int) -> str:
    """The query string of another page of the matrix, keeping its filters."""
    query = {k: v for k, v in data["filters"].items() if v}
    query["page"] = str(page)
    if data["per_page"] != PER_PAGE:
        query["per_page"] = str(data["per_page"])
    if len(data["nights"]) != STRIP_NIGHTS:
        query["nights"] = str(len(data["nights"]))
    return urlencode(query)


def html(template: str, data: dict[str, Any], links: Links, **extra: Any) -> str:
    return environment().get_template(template).render(data=data, links=links, **extra)


def _default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def json_text(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False, separators=(",", ":"))
