"""`dayone export DIR`: the served pages and JSON as static files with relative links that all
resolve, nothing written outside DIR whatever the model ids are."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.export import export
from test_service_api import XSS, history, probe
from conftest import filled_store


class Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src", "action", "data-json") and value:
                self.refs.append(value)


def local_refs(page: Path) -> list[str]:
    parser = Refs()
    parser.feed(page.read_text())
    return [r for r in parser.refs if not re.match(r"^(https?:|data:|mailto:|#|\?)", r)]


fill = filled_store


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("export")
    url = fill(f"sqlite:///{root / 'dayone.db'}", history())
    out = root / "site"
    report = export(out, url)
    # matrix + the architecture map + search + 3 models + 2 engines + 3 engine releases + 4 cells
    assert report.pages == 15
    return out, url


def test_the_export_has_every_page_twin_badge_and_feed(site):
    out, _ = site
    for rel in (
        "index.html",
        "index.json",
        "models/org/alpha.html",
        "models/org/alpha.json",
        "engines/vllm.html",
        "engines/vllm.json",
        "cells/org/beta/transformers.html",
        "cells/org/beta/transformers.json",
        "badge/org/alpha/vllm.svg",
        "feed.atom",
        "api/v1/matrix.json",
        "api/v1/models.json",
        "api/v1/engines.json",
        "map.html",
        "map.json",
        "api/v1/map.json",
        "search.html",
        "search.json",
        "engines/vllm/0.8.1.html",
        "engines/vllm/0.8.1.json",
        "api/v1/engines/vllm/0.8.1/diff.json",
        "api/v1/compat.json",
        "static/dayone.css",
        "static/dayone.js",
        ".nojekyll",
    ):
        assert (out / rel).is_file(), rel


def test_every_relative_link_resolves_to_a_file(site):
    out, _ = site
    pages = sorted(out.rglob("*.html"))
    assert len(pages) == 15
    checked = 0
    for page in pages:
        for ref in local_refs(page):
            target = (page.parent / unquote(urlsplit(ref).path)).resolve()
            assert target.is_relative_to(out.resolve()), (page, ref)
            assert target.is_file(), f"{page.relative_to(out)} links to missing {ref}"
            checked += 1
    assert checked > 50


def test_the_json_is_what_the_server_answers(site):
    out, url = site
    with TestClient(create_app(url)) as c:
        assert json.loads((out / "index.json").read_text()) == c.get("/api/v1/matrix?per_page=3").json()
        for rel in ("models/org/alpha", "engines/vllm", "engines/vllm/0.8.1", "cells/org/beta/transformers"):
            assert json.loads((out / f"{rel}.json").read_text()) == c.get(f"/{rel}.json").json()
        live = c.get("/models/org/alpha").text
    exported = (out / "models/org/alpha.html").read_text()
    # the same page apart from links (relative, with .html) and the static-site marker
    strip = lambda t: re.sub(r'(href|src|action|data-json|data-api)="[^"]*"', "", t).replace(
        ' data-static="1"', ""
    )
    assert strip(live) == strip(exported)


def test_exported_pages_keep_untrusted_text_inert(site):
    out, _ = site
    for page in ("index.html", "cells/org/beta/transformers.html"):
        text = (out / page).read_text()
        assert "<script>alert" not in text and "<img src=x" not in text
    assert "<script>alert" not in (out / "feed.atom").read_text()
    assert (
        json.loads((out / "cells/org/beta/transformers.json").read_text())["latest_failure"]["message"] == XSS
    )


def test_hostile_model_ids_stay_inside_the_export(tmp_path):
    ids = [
        "../../escape",
        "a/../../../etc/passwd",
        ".hidden/x",
        "/abs/path",
        "x.json",
        "con/..\\..\\win",
        "ünï/cödé",
    ]
    url = fill(f"sqlite:///{tmp_path / 'odd.db'}", [r for m in ids for r in probe(m, "vllm", "1", 0)])
    out = tmp_path / "deep" / "site"
    export(out, url)
    outside = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    assert outside <= {tmp_path / name for name in ("odd.db", "odd.db-wal", "odd.db-shm", "deep")}
    assert not any(p.name.startswith(".") and p.name != ".nojekyll" for p in out.rglob("*"))
    models = json.loads((out / "api/v1/models.json").read_text())["models"]
    assert {m["model"] for m in models} == set(ids)
    for page in out.rglob("*.html"):
        for ref in local_refs(page):
            assert (page.parent / unquote(urlsplit(ref).path)).resolve().is_file(), ref


def test_the_cli_command(site, tmp_path):
    from service.cli import app

    _, url = site
    result = CliRunner().invoke(app, ["export", str(tmp_path / "cli-site"), "--db", url])
    assert result.exit_code == 0, result.output
    assert "15 pages" in result.output
    assert (tmp_path / "cli-site" / "index.html").is_file()
