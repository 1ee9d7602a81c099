"""The architecture map as a page (/map), its JSON twin (/map.json, the document `dayone map
--json` prints), the release timeline per cell and the share green per release: the real app
over a real SQLite file filled through matrix.ingest."""

from __future__ import annotations

import html
import re

import pytest
from markupsafe import escape
from fastapi.testclient import TestClient

from matrix import archmap
from matrix.ingest import ingest_records
from matrix.store import open_store
from service.app import create_app
from test_archmap import rec as archmap_rec
from test_service_api import XSS
from conftest import filled_store

LLAMA = {"source": "release", "repo": "meta-llama/Llama-3.2-1B", "revision": "abc", "pristine": True}
QWEN = {"source": "release", "repo": "Qwen/Qwen3-4B", "revision": "def", "pristine": True}
SYNTHETIC = {"source": "synthetic"}


def rec(arch: str, engine: str, stage: str, status: str, **kw) -> dict:
    """test_archmap's record, with one environment per engine release (as probes make them)."""
    record = archmap_rec(arch, engine, stage, status, **kw)
    record["engine"]["environment_id"] = f"{engine}-{kw.get('version', '1.0')}"
    return record


def lined(record: dict, lineage: dict) -> dict:
    record["model"]["lineage"] = lineage
    return record


def map_records() -> list[dict]:
    """llama: red in vLLM 0.8.0 (a hostile message), green in 0.9.0; qwen3: green in 0.8.0,
    an `error` generate under a green load in 0.9.0; gpt_oss (synthetic copy): red in vLLM,
    green in SGLang; bert: an encoder, listed apart."""
    out = []
    for stage, status, minute in (("load", "fail", 0), ("generate", "skipped", 1)):
        out.append(
            lined(
                rec(
                    "llama",
                    "vllm",
                    stage,
                    status,
                    version="0.8.0",
                    minute=minute,
                    failure_class="unsupported_architecture" if status == "fail" else None,
                    message=XSS if status == "fail" else None,
                ),
                LLAMA,
            )
        )
    for i, stage in enumerate(("load", "generate", "parity")):
        out.append(lined(rec("llama", "vllm", stage, "pass", version="0.9.0", minute=10 + i), LLAMA))
        out.append(lined(rec("qwen3", "vllm", stage, "pass", version="0.8.0", minute=i), QWEN))
    out.append(lined(rec("qwen3", "vllm", "load", "pass", version="0.9.0", minute=20), QWEN))
    out.append(
        lined(
            rec(
                "qwen3",
                "vllm",
                "generate",
                "error",
                version="0.9.0",
                minute=21,
                failure_class="infra",
                message="harness bug",
            ),
            QWEN,
        )
    )
    for i, stage in enumerate(("convert", "load", "generate", "parity")):
        out.append(lined(rec("llama", "llamacpp", stage, "pass", version="b5000", minute=30 + i), LLAMA))
    out.append(
        lined(
            rec(
                "gpt_oss",
                "vllm",
                "load",
                "fail",
                version="0.9.0",
                minute=40,
                failure_class="kernel_or_dtype",
                message="sinks",
            ),
            SYNTHETIC,
        )
    )
    out.append(lined(rec("gpt_oss", "sglang", "load", "pass", version="0.5.0", minute=41), SYNTHETIC))
    out.append(rec("bert", "vllm", "load", "n/a", version="0.9.0", minute=42, message="bert: an encoder"))
    # the fine-tune group: PEFT trains llama's copy, cannot wrap a module of gpt_oss's
    out.append(lined(rec("llama", "peft", "finetune", "pass", version="0.21.2", minute=43), LLAMA))
    out.append(
        lined(
            rec(
                "gpt_oss",
                "peft",
                "finetune",
                "fail",
                version="0.21.2",
                minute=44,
                failure_class="unsupported_layer",
            ),
            SYNTHETIC,
        )
    )
    return out


@pytest.fixture(scope="module")
def db_url(tmp_path_factory) -> str:
    return filled_store(tmp_path_factory.mktemp("map"), map_records())


@pytest.fixture(scope="module")
def client(db_url):
    with TestClient(create_app(db_url)) as c:
        yield c


def cells_of(page: str) -> dict[tuple[str, str], str]:
    """(architecture, engine) -> the status class of its cell on the page."""
    out = {}
    for arch, body in re.findall(r'<tr data-arch="([^"]+)"(.*?)</tr>', page, re.S):
        for status, engine in re.findall(r'<td class="cell st-([\w/-]+)" data-engine="([^"]+)"', body):
            out[(html.unescape(arch), engine)] = status
    return out


def test_the_map_page_shows_every_stage_the_coverage_and_the_rows_apart(client):
    r = client.get("/map")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    cells = cells_of(page)
    assert cells[("llama", "vllm")] == "pass" and cells[("llama", "llamacpp")] == "pass"
    # An `error` generate under a green load is not green, and both stages are written out.
    assert cells[("qwen3", "vllm")] == "error"
    qwen = re.search(r'<tr data-arch="qwen3".*?</tr>', page, re.S).group(0)
    assert "load <b>pass</b>" in qwen and "generate <b>error</b>" in qwen
    assert cells[("qwen3", "sglang")] == "none"  # never probed there: said so
    # 2 of 3 generators have a verdict in every engine? none does: sglang ran only gpt_oss.
    assert "0/3</strong> generative architectures (0.0%)" in page
    assert "1 not generative, listed apart" in page
    # PEFT's column is the fine-tune group's, last, and out of the inference coverage above
    assert "Fine-tune group (peft): <strong>2/3</strong>" in page
    assert (
        '<th scope="colgroup" colspan="3">inference</th><th scope="colgroup" colspan="1">fine-tune</th>'
        in page
    )
    assert cells[("gpt_oss", "peft")] == "fail" and cells[("qwen3", "peft")] == "none"
    header = re.search(r"<thead>.*?</thead>", page, re.S).group(0)
    assert header.index('data-engine="vllm"') < header.index('data-engine="peft"')
    apart = page.split("Not decoder-only generators", 1)[1]
    assert 'data-arch="bert"' in apart and "encoder" in apart
    assert 'data-arch="bert"' not in page.split("Not decoder-only generators", 1)[0]
    # Each cell links its cell page; the lineage says where the copy came from.
    assert 'href="./cells/arch/llama/vllm"' in page
    assert "from meta-llama/Llama-3.2-1B" in page and "synthetic" in qwen + page
    # The navigation reaches the map from every page.
    assert 'href="./map"' in client.get("/").text


def test_the_release_timeline_runs_oldest_to_newest_from_stored_results(client):
    data = client.get("/map.json").json()
    assert data["timeline"]["llama"]["vllm"] == [
        {"version": "0.8.0", "status": "fail"},
        {"version": "0.9.0", "status": "pass"},
    ]
    assert data["timeline"]["qwen3"]["vllm"] == [
        {"version": "0.8.0", "status": "pass"},
        {"version": "0.9.0", "status": "error"},
    ]
    page = client.get("/map").text
    llama = re.search(r'<tr data-arch="llama".*?data-engine="vllm"(.*?)</td>', page, re.S)
    versions = re.findall(r'<li class="rel st-(\w+)" title="([^"]+)"', llama.group(1))
    assert versions == [("fail", "0.8.0: fail"), ("pass", "0.9.0: pass")]


def test_share_green_per_release_is_drawn_as_svg(client):
    data = client.get("/map.json").json()
    # vLLM 0.8.0: llama red, qwen3 green; 0.9.0: llama green, qwen3 error, gpt_oss red.
    # bert (not a generator) is out of the share.
    assert data["green_share"]["vllm"] == [
        {"version": "0.8.0", "green": 1, "total": 2, "percent": 50.0},
        {"version": "0.9.0", "green": 1, "total": 3, "percent": 33.3},
    ]
    page = client.get("/map").text
    figure = re.search(r'<figure class="plot" data-engine="vllm">.*?</figure>', page, re.S)
    assert figure and "<svg" in figure.group(0) and "<polyline" in figure.group(0)
    assert "vllm 0.9.0: 1/3 green (33.3%)" in figure.group(0)
    assert "<script" not in figure.group(0)


@pytest.fixture(scope="module")
def hostile_client(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('map-xss') / 'dayone.db'}"
    store = open_store(url)
    evil = '"><svg onload=alert(1)>'
    with store.writing() as s:
        assert (
            ingest_records(
                s,
                [
                    lined(
                        rec("evil", "vllm", "load", "fail", message=XSS, failure_class=XSS),
                        {"source": "release", "repo": evil},
                    ),
                    rec(f"x{evil}", "vllm", "load", "pass", minute=1),
                ],
            ).rejected
            == []
        )
    store.close()
    with TestClient(create_app(url)) as c:
        yield c


def test_hostile_text_from_records_is_escaped(hostile_client):
    page = hostile_client.get("/map").text
    assert XSS not in page and "<svg onload" not in page
    assert str(escape(XSS)) in page  # shown, as text
    assert hostile_client.get("/map.json").json()["cells"]["evil"]["vllm"]["message"] == XSS
    # a filter value comes back in the form, escaped too
    page = hostile_client.get("/map", params={"q": XSS}).text
    assert XSS not in page and "No architecture matches" in page


def test_filters_are_query_parameters(client):
    def archs(**params) -> list[str]:
        return list(client.get("/map.json", params=params).json()["cells"])

    assert archs() == ["gpt_oss", "llama", "qwen3"]
    assert archs(q="QWEN") == ["qwen3"]  # a substring of the name, any case
    assert archs(q="meta-llama") == ["llama"]  # or of the release it was shrunk from
    assert archs(lineage="synthetic") == ["gpt_oss"]
    assert archs(lineage="release") == ["llama", "qwen3"]
    assert archs(status="error") == ["qwen3"]
    assert archs(status="fail") == ["gpt_oss"]
    narrowed = client.get("/map.json", params={"engine": "sglang"}).json()
    assert narrowed["engines"] == ["sglang"] and narrowed["all_engines"] == [
        "llamacpp",
        "sglang",
        "vllm",
        "peft",
    ]
    assert {e for row in narrowed["cells"].values() for e in row} == {"sglang"}
    assert archs(engine="sglang", status="fail") == []
    # The form says what is chosen, and works without JavaScript (a GET form).
    page = client.get("/map", params={"status": "error", "lineage": "release"}).text
    assert re.search(r'<form class="filters" method="get" action="./map"', page)
    assert '<option value="error" selected>' in page
    assert '<option value="release" selected>release copy</option>' in page
    assert list(cells_of(page)) == [
        ("qwen3", "llamacpp"),
        ("qwen3", "sglang"),
        ("qwen3", "vllm"),
        ("qwen3", "peft"),
    ]
    # An empty form field means any.
    assert archs(q="", engine="", status="", lineage="") == ["gpt_oss", "llama", "qwen3"]


def test_the_json_twin_is_the_cli_document(client, db_url):
    from matrix import queries

    store = open_store(db_url)
    with store.session() as s:
        records = queries.results(s, model_prefix=archmap.ARCH_PREFIX, with_output=False)
    store.close()
    doc = archmap.map_document(records)
    data = client.get("/map.json").json()
    for key in ("engines", "coverage", "lineage", "cells", "not_generative"):
        assert data[key] == doc[key], key
    assert client.get("/api/v1/map").json() == data
    assert data["lineage"]["gpt_oss"] == SYNTHETIC


def test_new_results_reach_the_cached_map(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'dayone.db'}"
    store = open_store(db_url)
    with store.writing() as s:
        assert ingest_records(s, map_records()).rejected == []
    store.close()
    with TestClient(create_app(db_url)) as c:
        assert c.get("/map.json").json()["timeline"]["gpt_oss"]["sglang"] == [
            {"version": "0.5.0", "status": "pass"}
        ]
        store = open_store(db_url)
        with store.writing() as s:
            assert (
                ingest_records(
                    s, [rec("gpt_oss", "sglang", "load", "fail", version="0.6.0", minute=50)]
                ).rejected
                == []
            )
        store.close()
        assert c.get("/map.json").json()["timeline"]["gpt_oss"]["sglang"] == [
            {"version": "0.5.0", "status": "pass"},
            {"version": "0.6.0", "status": "fail"},
        ]


def test_an_empty_store_says_how_to_fill_the_map(tmp_path):
    with TestClient(create_app(f"sqlite:///{tmp_path / 'empty.db'}")) as c:
        r = c.get("/map")
        assert r.status_code == 200 and "dayone sweep" in r.text
        assert c.get("/map.json").json()["cells"] == {}
