"""The site and JSON API through the real app (FastAPI TestClient) over a real SQLite file
filled with records by matrix.ingest."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from matrix.ingest import ingest_records
from matrix.store import open_store
from service.app import create_app
from service.links import slug, unslug
from conftest import filled_store

TOKEN = "s3cret-token"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
NIGHT0 = dt.datetime(2025, 3, 1, 2, 0, tzinfo=dt.timezone.utc)


def record(
    model: str,
    engine: str,
    version: str,
    stage: str,
    status: str,
    night: int,
    *,
    family: str = "llama",
    release: str | None = "2025-02-27",
    failure_class=None,
    message=None,
    log_excerpt=None,
    tier: str = "arch",
    hardware: str = "cpu",
) -> dict:
    t = NIGHT0 + dt.timedelta(days=night, seconds=["load", "generate", "parity"].index(stage))
    return {
        "schema_version": 1,
        "run_id": f"night-{night}",
        "model": {
            "id": model,
            "revision": "r1",
            "model_type": family,
            "architecture": "LlamaForCausalLM",
            "family": family,
            **({"release_date": release} if release else {}),
        },
        "engine": {"name": engine, "version": version, "hardware": hardware},
        "tier": tier,
        "stage": stage,
        "status": status,
        "failure_class": failure_class,
        "message": message,
        "log_excerpt": log_excerpt,
        "metrics": {"s": 0.1},
        "started_at": t.isoformat(),
        "duration_s": 0.1,
        "reproduce": f"dayone probe {model} --engine {engine}=={version}",
    }


def probe(model, engine, version, night, statuses=("pass", "pass", "pass"), **kw) -> list[dict]:
    out = []
    for stage, status in zip(("load", "generate", "parity"), statuses):
        extra = dict(kw)
        if status not in ("pass", "skipped"):
            extra.setdefault("failure_class", "unsupported_architecture")
            extra.setdefault("message", "ValueError: model type `newarch` not recognised")
            extra.setdefault("log_excerpt", "Traceback ...\nValueError: model type `newarch`")
        out.append(record(model, engine, version, stage, status, night, **extra))
    return out


def history() -> list[dict]:
    """Three models, two engines, six nights: a regression, a fix, an XSS payload."""
    recs: list[dict] = []
    for night in range(6):
        # org/alpha: green everywhere from night 0
        recs += probe("org/alpha", "transformers", "4.51.0", night)
        # vllm gets alpha green on night 2 (version bump), red before
        if night < 2:
            recs += probe("org/alpha", "vllm", "0.8.0", night, ("fail", "skipped", "skipped"))
        else:
            recs += probe("org/alpha", "vllm", "0.8.1", night)
        # org/beta (newer release): green in transformers until night 3, then broken
        recs += probe(
            "org/beta",
            "transformers",
            "4.51.0",
            night,
            ("pass", "pass", "pass") if night < 4 else ("pass", "fail", "skipped"),
            family="qwen3",
            release="2025-03-02",
            message=XSS,
            log_excerpt=f"line 1\n{XSS}\nline 3",
        )
        # old/gamma: infra errors only in vllm
        recs += probe(
            "old/gamma",
            "vllm",
            "0.8.1",
            night,
            ("error", "skipped", "skipped"),
            family="qwen3",
            release="2024-06-01",
            failure_class="infra",
            message="disk full",
        )
    return recs


@pytest.fixture(scope="module")
def db_url(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("svc") / "dayone.db"
    url = f"sqlite:///{path}"
    store = open_store(url)
    with store.writing() as s:
        report = ingest_records(s, history())
    assert report.rejected == [] and report.inserted == len(history())
    store.close()
    return url


@pytest.fixture(scope="module")
def client(db_url) -> TestClient:
    with TestClient(create_app(db_url, ingest_token=TOKEN)) as c:
        yield c


# The matrix


def test_matrix_page_shows_latest_status_per_cell(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    # every model and engine is there; each cell says its status in words
    for name in ("org/alpha", "org/beta", "old/gamma", "transformers", "vllm"):
        assert name in page
    cells = re.findall(r'<td class="cell st-(\w+)" data-engine="([^"]+)"', page)
    assert ("pass", "transformers") in cells and ("fail", "transformers") in cells
    assert ("error", "vllm") in cells
    assert "not probed" in page  # beta has no vllm cell, gamma no transformers one


def test_matrix_json_is_the_same_data(client):
    data = client.get("/api/v1/matrix").json()
    assert client.get("/index.json").json() == data
    rows = {row["model"]: row for g in data["families"] for row in g["models"]}
    assert rows["org/alpha"]["cells"]["transformers"]["status"] == "pass"
    assert rows["org/alpha"]["cells"]["vllm"]["status"] == "pass"
    assert rows["org/alpha"]["cells"]["vllm"]["engine_version"] == "0.8.1"
    assert rows["org/beta"]["cells"]["transformers"]["status"] == "fail"
    assert rows["org/beta"]["cells"]["transformers"]["why"]["failure_class"] == ("unsupported_architecture")
    assert rows["old/gamma"]["cells"]["vllm"]["status"] == "error"
    assert data["engines"] == ["transformers", "vllm"]


def test_models_newest_first_grouped_by_family(client):
    data = client.get("/api/v1/matrix").json()
    families = [g["family"] for g in data["families"]]
    order = [row["model"] for g in data["families"] for row in g["models"]]
    # qwen3 has the newest model (beta, 2025-03-02) so it leads; gamma (2024) stays in it
    assert families == ["qwen3", "llama"]
    assert order == ["org/beta", "old/gamma", "org/alpha"]


def test_strip_days_to_green_and_tier(client):
    data = client.get("/api/v1/matrix?nights=6").json()
    rows = {row["model"]: row for g in data["families"] for row in g["models"]}
    strip = [n["status"] for n in rows["org/alpha"]["cells"]["vllm"]["strip"]]
    assert strip == ["fail", "fail", "pass", "pass", "pass", "pass"]
    beta = [n["status"] for n in rows["org/beta"]["cells"]["transformers"]["strip"]]
    assert beta == ["pass", "pass", "pass", "pass", "fail", "fail"]
    # alpha released 2025-02-27, first green in vllm on night 2 (2025-03-03): 4 days
    assert rows["org/alpha"]["cells"]["vllm"]["days_to_green"] == 4
    assert rows["org/alpha"]["cells"]["transformers"]["days_to_green"] == 2
    assert rows["old/gamma"]["cells"]["vllm"]["days_to_green"] is None
    assert rows["org/alpha"]["cells"]["vllm"]["tier"] == "arch"


def test_days_to_green_beyond_the_horizon_reads_over(tmp_path):
    from service import views

    url = f"sqlite:///{tmp_path / 'late.db'}"
    store = open_store(url)
    with store.writing() as s:
        ingest_records(s, probe("m/late", "vllm", "1", 0, release="2024-01-01"))
    store.close()
    with TestClient(create_app(url)) as c:
        cell = c.get("/api/v1/matrix").json()["families"][0]["models"][0]["cells"]["vllm"]
        exact = c.get("/api/v1/summaries", params={"model": "m/late"}).json()["summaries"][0]
    assert cell["days_to_green"] is None
    assert cell["days_to_green_over"] == views.DTG_HORIZON_DAYS
    assert exact["days_to_green"] == 425  # the cell page and API have the exact figure


@pytest.mark.parametrize(
    "query, models",
    [
        ("family=llama", {"org/alpha"}),
        ("engine=vllm", {"org/alpha", "old/gamma"}),
        ("status=fail", {"org/beta"}),
        ("status=error", {"old/gamma"}),
        ("tier=full", set()),
        ("hardware=cpu", {"org/alpha", "org/beta", "old/gamma"}),
        ("hardware=h100", set()),
    ],
)
def test_matrix_filters(client, query, models):
    data = client.get(f"/api/v1/matrix?{query}").json()
    assert {row["model"] for g in data["families"] for row in g["models"]} == models
    assert data["total_models"] == len(models)


def test_matrix_pagination(client):
    first = client.get("/api/v1/matrix?per_page=2").json()
    second = client.get("/api/v1/matrix?per_page=2&page=2").json()
    assert (first["pages"], first["total_models"]) == (2, 3)
    names = [r["model"] for d in (first, second) for g in d["families"] for r in g["models"]]
    assert names == ["org/beta", "old/gamma", "org/alpha"]
    assert 'rel="next"' in client.get("/?per_page=2").text


# Model, engine and cell pages, each with a JSON twin


def test_model_page_and_twin(client):
    r = client.get("/models/org/alpha")
    assert r.status_code == 200 and "org/alpha" in r.text and "supported since" in r.text
    data = client.get("/models/org/alpha.json").json()
    assert data["model"] == "org/alpha" and set(data["engines"]) == {"transformers", "vllm"}
    summaries = {s["engine"]: s for s in data["summaries"]}
    assert summaries["vllm"]["supported_since"] == "0.8.1"
    assert client.get("/api/v1/models/org/alpha").json() == data
    assert client.get("/models/org/nothing").status_code == 404
    assert client.get("/models/org/nothing.json").json() == {"detail": "not found"}


def test_engine_page_says_what_each_version_fixed(client):
    data = client.get("/engines/vllm.json").json()
    versions = {v["version"]: v for v in data["versions"]}
    assert versions["0.8.1"]["fixed"] == ["org/alpha"]
    assert versions["0.8.0"]["counts"]["fail"] == 1
    assert "0.8.1" in client.get("/engines/vllm").text
    assert client.get("/api/v1/engines/vllm").json() == data
    assert client.get("/engines/nope").status_code == 404
    engines = client.get("/api/v1/engines").json()["engines"]
    assert [e["engine"] for e in engines] == ["transformers", "vllm"]


def test_engine_page_reports_breakage_between_versions(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    store = open_store(url)
    with store.writing() as s:
        ingest_records(
            s, probe("m/x", "vllm", "1.0", 0) + probe("m/x", "vllm", "1.1", 1, ("fail", "skipped", "skipped"))
        )
    store.close()
    with TestClient(create_app(url)) as c:
        versions = {v["version"]: v for v in c.get("/engines/vllm.json").json()["versions"]}
    assert versions["1.1"]["broke"] == ["m/x"] and versions["1.0"]["new_green"] == ["m/x"]


def test_engine_page_shows_each_environments_resolved_packages(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    store = open_store(url)
    resolved = {
        "transformers": "4.49.0",
        "torch": "2.13.0+cpu",
        "tokenizers": "0.21.4",
        "huggingface-hub": "0.36.2",
        "safetensors": "0.7.0",
        "zzz-last": "1",
    }
    records = probe("m/x", "transformers", "4.49.0", 0)
    for r in records:
        r["engine"] |= {"packages": {"transformers": "4.49.0"}, "resolved_packages": resolved}
    with store.writing() as s:
        ingest_records(s, records)
    store.close()
    with TestClient(create_app(url)) as c:
        env = c.get("/engines/transformers.json").json()["environments"][0]
        page = c.get("/engines/transformers").text
    assert env["key_packages"] == {
        "transformers": "4.49.0",
        "torch": "2.13.0+cpu",
        "tokenizers": "0.21.4",
        "triton": None,
        "huggingface-hub": "0.36.2",
    }
    assert env["packages"] == dict(sorted(resolved.items()))
    assert "huggingface-hub <code>0.36.2</code>" in page
    assert "<details><summary>all 6 packages</summary>" in page
    assert "<code>zzz-last==1</code>" in page


def test_cell_page_history_log_and_reproduce(client):
    r = client.get("/cells/org/beta/transformers")
    assert r.status_code == 200
    assert "dayone probe org/beta --engine transformers==4.51.0" in r.text
    assert "Log excerpt" in r.text
    data = client.get("/cells/org/beta/transformers.json").json()
    assert data["cell"]["status"] == "fail"
    assert data["latest_failure"]["stage"] == "generate"
    assert len(data["history"]) == 18
    assert data["summary"]["failing_since"]["started_at"].startswith("2025-03-05")
    api = client.get("/api/v1/cells", params={"model": "org/beta", "engine": "transformers"})
    assert api.json() == data
    assert client.get("/cells/org/beta/nope").status_code == 404
    assert client.get("/cells/onlyone").status_code == 404


# Untrusted strings


@pytest.mark.parametrize("path", ["/", "/cells/org/beta/transformers", "/models/org/beta"])
def test_xss_payload_in_a_failure_message_is_inert(client, path):
    page = client.get(path).text
    assert "<script>alert" not in page and "<img src=x" not in page
    if path != "/models/org/beta":
        assert html.escape(XSS, quote=False)[:20] in page.replace("&#34;", '"')


def test_security_headers(client):
    r = client.get("/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "object-src 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in r.text.replace("<script src=", "")  # no inline script
    assert ' style="' not in r.text  # no inline style either (the CSP would block it)


def test_odd_model_ids_round_trip_and_cannot_traverse(tmp_path):
    ids = ["a/../../etc/passwd", ".hidden/x", "space name/€uro", "x.json", "/lead", "tail/", "a//b", "~tilde"]
    for mid in ids:
        s = slug(mid)
        assert unslug(s) == mid
        assert all(seg not in ("", ".", "..") and not seg.startswith(".") for seg in s.split("/")), s
        assert re.fullmatch(r"[A-Za-z0-9._~/-]+", s)
    url = filled_store(tmp_path, [r for m in ids for r in probe(m, "vllm", "1", 0)])
    with TestClient(create_app(url)) as c:
        for mid in ids:
            assert c.get(f"/models/{slug(mid)}.json").json()["model"] == mid
            assert c.get(f"/cells/{slug(mid)}/vllm.json").json()["model"] == mid
            assert c.get(f"/badge/{slug(mid)}/vllm.svg").text.count("pass") >= 1
        page = c.get("/").text
        hrefs = re.findall(r'href="([^"]+)"', page)
        assert all(".." not in h.replace("../", "") for h in hrefs), hrefs


# Badges, feed, health


def test_badge_svg(client):
    r = client.get("/badge/org/alpha/vllm.svg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    root = ET.fromstring(r.text)
    assert root.tag.endswith("svg") and "vllm: pass 0.8.1" in r.text
    assert "#1a7f37" in r.text
    fail = client.get("/badge/org/beta/transformers.svg").text
    assert "fail" in fail and "#cf222e" in fail
    assert "no data" in client.get("/badge/org/none/vllm.svg").text
    assert client.get("/badge/org/alpha/vllm.png").status_code == 404


def test_feed_has_regressions_and_new_greens(client, monkeypatch):
    from service import feed

    with client.app.state.store.session() as s:
        data = feed.feed_view(s, now=NIGHT0 + dt.timedelta(days=6), days=7)
    kinds = {(e["kind"], e["model"], e["engine"]) for e in data["entries"]}
    assert ("regression", "org/beta", "transformers") in kinds
    assert ("new_green", "org/alpha", "vllm") in kinds
    r = client.get("/feed.atom")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
    ET.fromstring(r.content)  # well-formed even with the XSS payload around


def test_feed_atom_escapes_untrusted_ids(tmp_path):
    from service import feed
    from service.links import Links

    data = {
        "updated": "2025-01-01T00:00:00Z",
        "entries": [feed.Entry("regression", 'm/<x>&"', "e", NIGHT0, "fail", "1", "pass", "0").as_dict()],
    }
    ET.fromstring(feed.atom(data, Links()))


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok", "store": "sqlite"}


# Results, summaries, models lists


def test_results_filter_paginate_since(client):
    r = client.get("/api/v1/results", params={"model": "org/alpha", "engine": "vllm", "limit": 5})
    page1 = r.json()
    assert len(page1["results"]) == 5 and page1["next"]
    page2 = client.get(page1["next"]).json()
    assert page2["offset"] == 5
    seen = [x["started_at"] for x in page1["results"] + page2["results"]]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 10
    since = client.get("/api/v1/results", params={"since": "2025-03-05", "limit": 1000}).json()
    assert since["results"] and all(x["started_at"] >= "2025-03-05" for x in since["results"])
    assert since["next"] is None
    fails = client.get("/api/v1/results", params={"status": "fail", "limit": 1000}).json()
    assert {x["model"]["id"] for x in fails["results"]} == {"org/alpha", "org/beta"}
    assert client.get("/api/v1/results", params={"since": "yesterday"}).status_code == 422
    assert client.get("/api/v1/results", params={"limit": 0}).status_code == 422


def test_summaries_and_models(client):
    data = client.get("/api/v1/summaries", params={"model": "org/alpha"}).json()
    by_engine = {s["engine"]: s for s in data["summaries"]}
    assert by_engine["vllm"]["supported_since"] == "0.8.1"
    assert by_engine["vllm"]["days_to_green"] == 4
    assert client.get("/api/v1/summaries").status_code == 422
    models = client.get("/api/v1/models").json()
    assert [m["model"] for m in models["models"]] == ["org/beta", "old/gamma", "org/alpha"]
    assert client.get("/api/v1/models", params={"family": "llama"}).json()["total"] == 1


def test_openapi_documents_every_api_path(client):
    spec = client.get("/openapi.json").json()
    for path in (
        "/api/v1/matrix",
        "/api/v1/models",
        "/api/v1/models/{model_id}",
        "/api/v1/engines",
        "/api/v1/cells",
        "/api/v1/results",
        "/api/v1/summaries",
        "/api/v1/map",
        "/api/v1/map/{arch}",
        "/api/v1/search",
        "/api/v1/results/{result_id}",
        "/map/{name}",
        "/search",
        "/healthz",
        "/feed.atom",
        "/badge/{path}",
    ):
        assert path in spec["paths"], path
    assert "post" in spec["paths"]["/api/v1/results"]
    assert "ResultRecord" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# Ingest over HTTP


@pytest.fixture
def ingest_client(tmp_path):
    with TestClient(
        create_app(f"sqlite:///{tmp_path / 'in.db'}", ingest_token=TOKEN, max_body_bytes=200_000)
    ) as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_ingest_without_or_with_a_wrong_token_is_refused(ingest_client):
    body = probe("m/a", "vllm", "1", 0)
    r = ingest_client.post("/api/v1/results", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    for header in ("Bearer wrong", "Basic " + TOKEN, TOKEN, f"Bearer {TOKEN}x"):
        assert (
            ingest_client.post("/api/v1/results", json=body, headers={"Authorization": header}).status_code
            == 401
        )
    assert ingest_client.get("/api/v1/results").json()["results"] == []


def test_ingest_disabled_without_a_configured_token(tmp_path, monkeypatch):
    monkeypatch.delenv("DAYONE_INGEST_TOKEN", raising=False)
    with TestClient(create_app(f"sqlite:///{tmp_path / 'ro.db'}")) as c:
        r = c.post("/api/v1/results", json=probe("m/a", "vllm", "1", 0), headers=AUTH)
    assert r.status_code == 403


def test_ingest_token_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DAYONE_INGEST_TOKEN", "from-env")
    with TestClient(create_app(f"sqlite:///{tmp_path / 'env.db'}")) as c:
        ok = c.post(
            "/api/v1/results", json=probe("m/a", "vllm", "1", 0), headers={"Authorization": "Bearer from-env"}
        )
    assert ok.status_code == 200 and ok.json()["inserted"] == 3


def test_ingest_batch_is_idempotent(ingest_client):
    body = probe("m/a", "vllm", "1", 0) + probe("m/a", "vllm", "1", 1)
    first = ingest_client.post("/api/v1/results", json=body, headers=AUTH)
    assert first.status_code == 200
    assert first.json() == {"inserted": 6, "duplicates": 0, "rejected": []}
    again = ingest_client.post("/api/v1/results", json=body, headers=AUTH).json()
    assert again == {"inserted": 0, "duplicates": 6, "rejected": []}
    one = ingest_client.post("/api/v1/results", json=body[0], headers=AUTH).json()
    assert one["duplicates"] == 1
    lines = "\n".join(json.dumps(r) for r in probe("m/a", "vllm", "1", 2)) + "\n"
    nd = ingest_client.post(
        "/api/v1/results", content=lines, headers={**AUTH, "Content-Type": "application/x-ndjson"}
    )
    assert nd.json()["inserted"] == 3
    data = ingest_client.get("/api/v1/matrix?nights=3").json()
    cell = data["families"][0]["models"][0]["cells"]["vllm"]
    assert [n["status"] for n in cell["strip"]] == ["pass", "pass", "pass"]


def test_the_matrix_sees_new_nights_and_backfills_at_once(ingest_client):
    def strip() -> list:
        data = ingest_client.get("/api/v1/matrix?nights=4").json()
        cell = data["families"][0]["models"][0]["cells"]["vllm"]
        return [n["status"] for n in cell["strip"]]

    post = lambda recs: ingest_client.post("/api/v1/results", json=recs, headers=AUTH)
    post(probe("m/a", "vllm", "1", 0) + probe("m/a", "vllm", "1", 2))
    assert strip() == [None, "pass", None, "pass"]
    assert strip() == [None, "pass", None, "pass"]  # served from the cache: the same
    post(probe("m/a", "vllm", "1", 3, ("fail", "skipped", "skipped")))  # a new night
    assert strip() == ["pass", None, "pass", "fail"]
    post(probe("m/a", "vllm", "1", 1, ("oom", "skipped", "skipped")))  # a backfilled night
    assert strip() == ["pass", "oom", "pass", "fail"]


def test_model_and_cell_pages_see_new_results_at_once(ingest_client):
    post = lambda recs: ingest_client.post("/api/v1/results", json=recs, headers=AUTH)
    post(probe("m/a", "vllm", "1", 0) + probe("m/b", "vllm", "1", 0))
    before = ingest_client.get("/models/m/a.json").json()
    assert ingest_client.get("/models/m/a.json").json() == before  # cached, unchanged
    assert len(before["probes"]) == 1
    post(probe("m/a", "vllm", "2", 1, ("fail", "skipped", "skipped")))
    after = ingest_client.get("/models/m/a.json").json()
    assert len(after["probes"]) == 2 and after["cells"]["vllm"]["status"] == "fail"
    cell = ingest_client.get("/cells/m/a/vllm.json").json()
    assert cell["summary"]["regressions"] == 1
    summaries = ingest_client.get("/api/v1/summaries", params={"model": "m/a"}).json()
    assert summaries["summaries"][0]["status"] == "fail"


def test_ingest_reports_bad_records_and_keeps_good_ones(ingest_client):
    good = probe("m/b", "vllm", "1", 0)
    bad = {**good[0], "status": "exploded"}
    r = ingest_client.post("/api/v1/results", json=[good[0], bad, "text", good[1]], headers=AUTH)
    assert r.status_code == 200
    report = r.json()
    assert report["inserted"] == 2 and [x["at"] for x in report["rejected"]] == [1, 2]
    only_bad = ingest_client.post("/api/v1/results", json=[bad], headers=AUTH)
    assert only_bad.status_code == 422 and only_bad.json()["rejected"][0]["at"] == 0


@pytest.mark.parametrize(
    "body, code",
    [
        (b"", 400),
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b'{"a": NaN}', 400),
        (b"[]", 200),
        (b"null", 422),
        (b"42", 422),
        (b'"text"', 422),
        (b'{"a": 1}\n{oops\n', 400),
    ],
)
def test_ingest_bad_bodies_are_4xx_never_5xx(ingest_client, body, code):
    r = ingest_client.post("/api/v1/results", content=body, headers=AUTH)
    assert r.status_code == code, r.text


def test_ingest_size_limit(ingest_client):
    big = [record("m/c", "vllm", "1", "load", "pass", 0, log_excerpt="x" * 300_000)]
    r = ingest_client.post("/api/v1/results", json=big, headers=AUTH)
    assert r.status_code == 413
    many = "\n".join(["{}"] * 10_001)
    with TestClient(
        create_app(
            ingest_client.app.state.store.engine.url.render_as_string(hide_password=False), ingest_token=TOKEN
        )
    ) as c:
        assert c.post("/api/v1/results", content=many, headers=AUTH).status_code == 413


def test_nul_in_a_path_or_query_is_a_400(client):
    assert client.get("/api/v1/results?model=a%00b").status_code == 400
    assert client.get("/models/a%00b").status_code == 400


# Schemathesis: any request the OpenAPI schema allows gets an answer below 500


def _fuzz_app():
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="dayone-fuzz-")) / "dayone.db"
    store = open_store(f"sqlite:///{path}")
    with store.writing() as s:
        ingest_records(s, history())
    store.close()
    return create_app(f"sqlite:///{path}", ingest_token=TOKEN)


try:
    import schemathesis
    from hypothesis import HealthCheck, settings
except ImportError:  # keep the rest of this module running; say loudly what is missing
    schemathesis = None

if schemathesis is None:

    def test_no_5xx_for_anything_the_schema_allows():
        pytest.skip("*** SCHEMATHESIS NOT INSTALLED: pip install schemathesis ***")
else:

    @schemathesis.serializer("application/x-ndjson")
    def _ndjson(ctx, value) -> bytes:
        return (value if isinstance(value, str) else json.dumps(value)).encode("utf-8")

    fuzz_schema = schemathesis.openapi.from_asgi("/openapi.json", _fuzz_app())

    @fuzz_schema.parametrize()
    @settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def test_no_5xx_for_anything_the_schema_allows(case):
        headers = AUTH if case.method == "POST" else None
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])


@pytest.mark.parametrize("command", [["probe", "--help"], ["demo", "--help"], ["nightly", "--help"]])
def test_the_cli_offers_the_public_engines_not_the_internal_one(command):
    from typer.testing import CliRunner

    from probes.engines import public_engines
    from service.cli import app

    res = CliRunner().invoke(app, command, env={"COLUMNS": "300"}, terminal_width=300)
    assert res.exit_code == 0, res.output
    assert not re.search(r"\bfault\b", res.output)
    if command[0] != "nightly":
        assert ", ".join(public_engines()) in res.output
    else:  # the heavy engines, from the registry
        assert "Heavy engines (vllm, sglang)" in res.output
