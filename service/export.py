"""`dayone export DIR`: the site as static files (GitHub Pages): the same pages and JSON twins
the server renders, with relative links, plus badges, the feed and the API documents.

Every path is built from `service.links` (model ids escaped, never `..`), and each file is
checked to land inside DIR before it is written.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.orm import Session

from matrix import queries
from matrix.store import open_store
from service import badges, feed, render, views
from service.links import Links, arch_path, badge_path, cell_path, engine_path, model_path, release_path
from service.render import STATIC


@dataclass
class ExportReport:
    pages: int = 0
    files: int = 0

    def __str__(self) -> str:
        return f"{self.pages} pages ({self.files} files)"


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.report = ExportReport()

    def write(self, rel: str, text: str) -> None:
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):  # service.links never makes one; be sure
            raise ValueError(f"refusing to write outside the export: {rel!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self.report.files += 1

    def page(self, here: str, template: str, data: dict[str, Any]) -> None:
        """`here`.html and its twin `here`.json (the matrix is index.html / index.json)."""
        name = here or "index"
        self.write(name + ".html", render.html(template, data, Links(here, ".html")))
        self.write(name + ".json", render.json_text(data))
        self.report.pages += 1


def export_site(
    session: Session, out_dir: Path, progress: Callable[[str], None] | None = None
) -> ExportReport:
    w = _Writer(out_dir)
    say = progress or (lambda _msg: None)
    w.write(".nojekyll", "")  # GitHub Pages: serve the files as they are
    shutil.copytree(STATIC, w.root / "static", dirs_exist_ok=True)

    total = len(views.catalog(session))
    matrix = views.matrix_view(session, per_page=max(1, total))
    w.page("", "matrix.html", matrix)
    w.write("api/v1/matrix.json", render.json_text(matrix))
    w.write("api/v1/models.json", render.json_text(views.models_list(session, limit=max(1, total))))
    w.write("api/v1/engines.json", render.json_text(views.engines_list(session)))
    w.write("api/v1/compat.json", render.json_text(views.compat_view(session)))
    say(f"matrix: {total} models")
    amap = views.map_view(session)
    w.page("map", "map.html", amap)
    w.write("api/v1/map.json", render.json_text(amap))
    archs = [*amap["cells"], *amap["not_generative"]]
    for arch in archs:
        data = views.arch_view(session, arch)
        if data is None:
            continue
        w.page(arch_path(arch), "arch.html", data)
        w.write(f"api/v1/{arch_path(arch)}.json", render.json_text(data))
        for red in (r for e in data["engines"] for r in e["reds"]):  # each red's record
            record = views.result_record(session, red["result_id"])
            if record is not None:
                w.write(f"api/v1/results/{red['result_id']}.json", render.json_text(record))
    say(f"map: {len(archs)} architectures")
    # No server to ask: the search page lists every name and filters in the page.
    w.page("search", "search.html", views.search_view(session, None, limit=None))

    for model_id in views.catalog(session):
        data = views.model_page_view(session, model_id)
        if data is not None:
            w.page(model_path(model_id), "model.html", data)
    engines = queries.engine_names(session)
    for engine in engines:
        data = views.engine_view(session, engine)
        if data is None:
            continue
        w.page(engine_path(engine), "engine.html", data)
        diffs = views.engine_diffs(session, engine)
        for v in data["versions"]:
            release = views.engine_release_view(session, engine, v["version"], diffs)
            if release is not None:
                w.page(release_path(engine, v["version"]), "release.html", release)
                w.write(f"api/v1/{release_path(engine, v['version'])}/diff.json", render.json_text(release))
    cells = queries.all_cells(session)
    for model_id, engine in cells:
        data = views.cell_view(session, model_id, engine)
        if data is None:
            continue
        w.page(cell_path(model_id, engine), "cell.html", data)
        cell = data["cell"]
        b = badges.badge_for(
            engine, cell["status"] if cell else None, cell["engine_version"] if cell else None
        )
        w.write(badge_path(model_id, engine), badges.svg(b))
    say(f"{len(engines)} engines, {len(cells)} cells")
    w.write("feed.atom", feed.atom(feed.feed_view(session), Links("", ".html")))
    return w.report


def export_data(out_dir: str | Path, db_url: str | None = None, now: dt.datetime | None = None) -> list[Path]:
    """`dayone export --data DIR`: the support data as a versioned JSON data package."""
    from matrix.compat_data import write_package

    store = open_store(db_url)
    try:
        with store.session() as session:
            doc = views.compat_view(session, now)
    finally:
        store.close()
    return write_package(doc, Path(out_dir))


def export(
    out_dir: str | Path, db_url: str | None = None, progress: Callable[[str], None] | None = None
) -> ExportReport:
    store = open_store(db_url)
    try:
        with store.session() as session:
            return export_site(session, Path(out_dir), progress)
    finally:
        store.close()
