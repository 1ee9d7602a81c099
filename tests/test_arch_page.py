"""One architecture's page (/map/{arch}, its `.json` twin and /api/v1/map/{arch}), the map's
hardware and tier filters, the header's search (/search, /api/v1/search) and a model page's arch
tier: the query functions over a real SQLite store filled by matrix.ingest, and the pages
through the real app (FastAPI's TestClient)."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape

from matrix import archmap, queries
from matrix.ingest import ingest_records
from matrix.store import open_store
from service.app import create_app
from service.export import export
from test_export import local_refs
from test_map_page import LLAMA, QWEN, lined, map_records, rec
from test_service_api import XSS
from conftest import filled_store

H200 = "NVIDIA H200"
BARE = "python /logs/run/arch/llama/sglang-0.5.0/bare_load.py"
MAMBA = {"source": "release", "repo": "state-spaces/mamba-130m-hf", "revision": "m1"}


def on(record: dict, hardware: str, tier: str = "arch") -> dict:
    """The record on one hardware (its own environment, as probes make them)."""
    engine = record["engine"]
    engine["hardware"] = hardware
    engine["environment_id"] = f"{engine['name']}-{engine['version']}-{hardware}"
    record["tier"] = tier
    return record


def confirmed(record: dict, verdict: str, command: str, message: str) -> dict:
    record["reproduce"] = command
    record["confirmed"] = {"confirmed": True, "harness_disagrees": False}.get(verdict)
    record["confirmation"] = {
        "confirmed": record["confirmed"],
        "verdict": verdict,
        "message": message,
        "command": command,
        "bare_line": "ValueError: LlamaForCausalLM is not supported",
    }
    return record


def arch_records() -> list[dict]:
    """test_map_page's map, plus: llama in SGLang green in 0.4.0 and red since 0.5.0 on the
    CPU (confirmed bare) while green in 0.5.0 on an H200 (tier full); qwen3 in SGLang a red
    that a bare run passed (harness disagrees, now `error`); mamba on SGLang's transformers
    fallback in 0.5.0, native in 0.4.0; a tracked model whose files the qwen3 copy came from."""
    out = map_records()
    out += [
        on(lined(rec("llama", "sglang", st, "pass", version="0.4.0", minute=50 + i), LLAMA), "cpu")
        for i, st in enumerate(("load", "generate", "parity"))
    ]
    red = on(
        lined(
            rec(
                "llama",
                "sglang",
                "load",
                "fail",
                version="0.5.0",
                minute=55,
                failure_class="unsupported_architecture",
                message=XSS,
            ),
            LLAMA,
        ),
        "cpu",
    )
    out.append(confirmed(red, "confirmed", BARE, "the bare run failed the same way"))
    out.append(
        on(
            lined(
                rec(
                    "llama",
                    "sglang",
                    "generate",
                    "skipped",
                    version="0.5.0",
                    minute=56,
                    message="blocked by load (fail)",
                ),
                LLAMA,
            ),
            "cpu",
        )
    )
    out += [
        on(
            lined(rec("llama", "sglang", st, "pass", version="0.5.0", minute=53 + i), LLAMA),
            H200,
            tier="full",
        )
        for i, st in enumerate(("load", "generate"))
    ]
    ours = on(
        lined(
            rec(
                "qwen3",
                "sglang",
                "load",
                "error",
                version="0.5.0",
                minute=45,
                failure_class="harness_disagrees",
                message="passed bare",
            ),
            QWEN,
        ),
        "cpu",
    )
    out.append(
        confirmed(
            ours, "harness_disagrees", "python bare_qwen3_load.py", "the bare run passed: the red was ours"
        )
    )
    for version, minute, status, fallback in (("0.4.0", 46, "pass", False), ("0.5.0", 47, "degraded", True)):
        r = on(
            lined(
                rec(
                    "mamba",
                    "sglang",
                    "load",
                    status,
                    version=version,
                    minute=minute,
                    failure_class="transformers_fallback" if fallback else None,
                    message="ran on the transformers backend" if fallback else None,
                ),
                MAMBA,
            ),
            "cpu",
        )
        r["metrics"] = {"transformers_fallback": fallback, "architecture": "MambaForCausalLM"}
        out.append(r)
    tracked = rec("x", "vllm", "load", "pass", version="0.9.0", minute=48)
    tracked["model"] = {"id": "Qwen/Qwen3-4B", "revision": "def", "model_type": "qwen3", "family": "qwen3"}
    out.append(tracked)
    return out


@pytest.fixture(scope="module")
def db_url(tmp_path_factory) -> str:
    return filled_store(tmp_path_factory.mktemp("arch"), arch_records())


@pytest.fixture(scope="module")
def session(db_url):
    store = open_store(db_url)
    with store.session() as s:
        yield s
    store.close()


@pytest.fixture(scope="module")
def client(db_url):
    with TestClient(create_app(db_url)) as c:
        yield c


# The pure span and the query functions


def span(*pairs: tuple[str, str | None]) -> archmap.ReleaseSpan:
    return archmap.release_span("vllm", [archmap.ReleaseStatus(v, s) for v, s in pairs])


def test_release_span_says_since_when_like_caniuse():
    assert span(("0.8", "fail"), ("0.9", "pass"), ("0.10", "pass")).text() == ("supported since vllm 0.9")
    s = span(("0.8", "pass"), ("0.9", "fail"), ("0.10", "error"), ("0.11", "timeout"))
    assert (s.broken_since, s.last_green, s.supported_since) == ("0.9", "0.8", None)
    assert s.text() == "broken since vllm 0.9; last green 0.8"  # an `error` says nothing
    assert span(("0.8", "fail"), ("0.9", "oom")).text() == ("never worked in the releases probed (0.8–0.9)")
    assert span(("0.8", "pass"), ("0.9", "degraded")).text() == ("partial (degraded) since vllm 0.9")
    assert span(("0.8", "degraded"), ("0.9", "fail")).broken_since == "0.9"
    assert span(("0.8", "error"), ("0.9", "skipped")).now is None
    assert span().text() == "no verdict in any release probed"
    assert span(("0.8", "pass"), ("0.9", "fail"), ("0.10", "pass")).as_dict()["supported_since"] == "0.10"


def test_arch_results_are_typed_rows_of_every_release(session):
    rows = queries.arch_results(session, ["arch/llama"])
    assert all(isinstance(r, queries.ArchResult) for r in rows)
    assert {(r.engine, r.engine_version) for r in rows} == {
        ("vllm", "0.8.0"),
        ("vllm", "0.9.0"),
        ("llamacpp", "b5000"),
        ("sglang", "0.4.0"),
        ("sglang", "0.5.0"),
        ("peft", "0.21.2"),
    }
    red = next(r for r in rows if r.engine == "sglang" and r.status == "fail")
    assert (red.reproduce, red.confirmed, red.hardware, red.tier) == (BARE, True, "cpu", "arch")
    assert red.confirmation["verdict"] == "confirmed" and red.lineage == LLAMA
    assert [r.started_at for r in rows] == sorted(r.started_at for r in rows)
    assert queries.arch_results(session, []) == []
    assert queries.result_record(session, red.result_id)["message"] == XSS
    assert queries.result_record(session, 10**9) is None


def test_map_options_and_copies_of_a_type(session):
    opts = queries.map_options(session)
    assert opts == queries.MapOptions(hardware=("NVIDIA H200", "cpu"), tiers=("arch", "full"))
    assert queries.arch_copies(session, "qwen3") == ["arch/qwen3"]
    assert queries.arch_copies(session, "qwen") == [] and queries.arch_copies(session, "") == []
    stages = queries.arch_release_stages(session, hardware=H200)
    assert {(o.model, o.engine, o.engine_version) for o in stages} == {("arch/llama", "sglang", "0.5.0")}
    assert {o.stage for o in queries.arch_release_stages(session, tier="full")} == {"load", "generate"}


def test_search_ranks_exact_names_first_and_takes_wildcards_literally(session):
    def names(q: str, limit: int | None = 20) -> list[tuple[str, str]]:
        return [(h.kind, h.name) for h in queries.search(session, q, limit)]

    assert names("qwen3") == [("architecture", "qwen3"), ("model", "Qwen/Qwen3-4B")]
    assert names("QWEN") == [("model", "Qwen/Qwen3-4B"), ("architecture", "qwen3")]
    assert names("arch") == []  # the copies' `arch/` prefix is not part of their name
    assert names("%") == [] and names("_") == [("architecture", "gpt_oss")]
    assert names("a") == [("architecture", "llama"), ("architecture", "mamba")]
    assert names("a", limit=1) == [("architecture", "llama")]
    assert len(names("", limit=None)) == 6  # the static export's index: every name
    hit = queries.search(session, "Qwen3-4B")[0]
    assert hit.detail == "qwen3" and hit.kind == "model"


# /map/{arch}


def test_the_arch_page_shows_every_engine_stage_timeline_and_lineage(client):
    data = client.get("/map/llama.json").json()
    assert client.get("/api/v1/map/llama").json() == data
    assert data["lineage"] == LLAMA and data["lineage_kind"] == "release"
    engines = {e["engine"]: e for e in data["engines"]}
    assert list(engines) == ["llamacpp", "sglang", "vllm", "peft"]  # the fine-tune group last
    # Every arch stage, in order; a stage the engine does not run says so (None).
    # llama.cpp also quantizes (a sub-cell of its own on the map, not run in these records)
    assert list(engines["llamacpp"]["stages"]) == [
        "convert",
        "load",
        "generate",
        "parity",
        "quantize",
        "lora",
        "finetune",
    ]
    assert engines["vllm"]["stages"]["convert"] is None and engines["vllm"]["stages"]["finetune"] is None
    peft = engines["peft"]["stages"]
    assert peft["finetune"]["status"] == "pass" and peft["load"] is None
    assert engines["sglang"]["cell"]["status"] == "fail"
    assert engines["sglang"]["stages"]["load"]["failure_class"] == "unsupported_architecture"
    # The release timeline and since when, per engine.
    assert engines["vllm"]["releases"] == [
        {"version": "0.8.0", "status": "fail"},
        {"version": "0.9.0", "status": "pass"},
    ]
    assert engines["vllm"]["span"]["supported_since"] == "0.9.0"
    assert engines["sglang"]["span"]["text"] == "broken since sglang 0.5.0; last green 0.4.0"
    assert engines["sglang"]["hardware"] == ["NVIDIA H200", "cpu"]
    page = client.get("/map/llama")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "shrunk from <b>meta-llama/Llama-3.2-1B</b> at <code>abc</code>" in text
    assert "supported since vllm 0.9.0" in text and "broken since sglang 0.5.0" in text
    assert '<li class="rel st-fail" title="0.8.0: fail">' in text
    row = re.search(r'<tr data-engine="vllm".*?</tr>', text, re.S).group(0)
    assert re.search(r'data-stage="convert">\s*<span class="muted">not run', row)
    assert 'href="../cells/arch/llama/vllm"' in row  # the cell's page, relative
    assert 'href="../map"' in text  # back to the map


def test_each_red_has_its_bare_command_confirmation_and_record(client):
    data = client.get("/map/llama.json").json()
    reds = {(r["engine"], r["engine_version"]): r for e in data["engines"] for r in e["reds"]}
    assert list(reds) == [("sglang", "0.5.0"), ("vllm", "0.8.0")]
    red = reds[("sglang", "0.5.0")]
    assert (red["reproduce"], red["verdict"], red["bare"]) == (BARE, "confirmed", "confirmed bare")
    assert reds[("vllm", "0.8.0")]["bare"] is None  # never checked bare
    record = client.get(f"/api/v1/results/{red['result_id']}")
    assert record.status_code == 200 and record.json()["reproduce"] == BARE
    assert client.get("/api/v1/results/999999").status_code == 404
    page = client.get("/map/llama").text
    assert f'<pre class="reproduce">{BARE}</pre>' in page
    assert f'href="../api/v1/results/{red["result_id"]}"' in page
    assert "confirmed bare</strong>: the bare run failed the same way" in page
    assert "not checked bare yet" in page
    # A red a bare run passed: listed, said to be ours.
    qwen = client.get("/map/qwen3.json").json()
    ours = [r for e in qwen["engines"] for r in e["reds"]]
    assert [(r["status"], r["verdict"], r["bare"]) for r in ours] == [
        ("error", "harness_disagrees", "harness disagrees")
    ]
    assert "harness disagrees</strong>" in client.get("/map/qwen3").text


def test_a_fallback_cell_says_when_it_was_last_native(client):
    data = client.get("/map/mamba.json").json()
    (sglang,) = data["engines"]
    assert sglang["cell"]["status"] == "degraded"
    assert sglang["cell"]["native"]["text"] == "native up to sglang 0.4.0 (measured)"
    assert sglang["span"]["text"] == "partial (degraded) since sglang 0.5.0"
    page = client.get("/map/mamba").text
    assert "transformers fallback; native up to sglang 0.4.0 (measured)" in page


def test_synthetic_copies_and_types_apart_say_so(client):
    page = client.get("/map/gpt_oss").text
    assert "<b>synthetic</b>: a default config, no released files known" in page
    bert = client.get("/map/bert.json").json()
    assert bert["generative"] is False and "encoder" in bert["why_apart"]
    assert "not a generator" in client.get("/map/bert").text


def test_an_unknown_architecture_is_a_clear_404(client):
    r = client.get("/map/no_such_arch")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "No such architecture" in r.text and "no_such_arch" in r.text
    assert 'href="../map">See the architecture map' in r.text
    assert client.get("/map/no_such_arch.json").status_code == 404
    assert client.get("/api/v1/map/no_such_arch").status_code == 404
    r = client.get("/map/" + XSS.replace("/", "~2F"))
    assert r.status_code == 404 and XSS not in r.text and str(escape(XSS)) in r.text


def test_the_map_links_each_architecture_to_its_page(client):
    page = client.get("/map").text
    assert '<a class="arch-link" href="./map/llama">llama</a>' in page
    assert '<a class="arch-link" href="./map/bert">bert</a>' in page  # the rows apart too


# The map's hardware and tier filters


def test_hardware_and_tier_filters_compute_the_map_over_those_results(client):
    def cells(**params) -> dict:
        return client.get("/map.json", params=params).json()["cells"]

    # The CPU's red, newer than the H200's green in the same release, decides the whole map.
    assert cells()["llama"]["sglang"]["status"] == "fail"
    on_h200 = cells(hardware=H200)
    assert list(on_h200) == ["llama"] and on_h200["llama"]["sglang"]["status"] == "pass"
    assert cells(hardware="cpu")["llama"]["sglang"]["status"] == "fail"
    assert list(cells(tier="full")) == ["llama"]
    data = client.get("/map.json", params={"hardware": H200}).json()
    assert data["timeline"]["llama"]["sglang"] == [{"version": "0.5.0", "status": "pass"}]
    assert data["filters"]["hardware"] == H200
    assert data["options"]["hardware"] == ["NVIDIA H200", "cpu"]
    assert data["options"]["tier"] == ["arch", "full"]
    # The form keeps the choice (JS off: a plain GET form).
    page = client.get("/map", params={"hardware": H200, "tier": "full"}).text
    assert f'<option value="{H200}" selected>' in page
    assert '<option value="full" selected>' in page
    assert re.findall(r'<tr data-arch="([^"]+)"', page) == ["llama"]
    # Each cell names where it ran, so a static page can filter in place.
    assert 'data-hardware="NVIDIA H200|cpu" data-tier="arch|full"' in client.get("/map").text
    assert cells(hardware="", tier="") == cells()


# Search


def test_the_search_endpoint_answers_links(client):
    data = client.get("/api/v1/search", params={"q": "qwen3"}).json()
    assert data["results"] == [
        {"kind": "architecture", "name": "qwen3", "detail": None, "href": "/map/qwen3"},
        {"kind": "model", "name": "Qwen/Qwen3-4B", "detail": "qwen3", "href": "/models/Qwen/Qwen3-4B"},
    ]
    assert client.get("/api/v1/search").json()["results"] == []
    assert len(client.get("/api/v1/search", params={"q": "a", "limit": 1}).json()["results"]) == 1
    assert client.get("/api/v1/search", params={"q": "x" * 201}).status_code == 422


def test_every_page_has_the_labelled_search_box_and_the_page_works_without_js(client):
    for path in ("/", "/map", "/map/llama", "/models/Qwen/Qwen3-4B", "/map/nope"):
        page = client.get(path).text
        assert re.search(
            r'<form class="site-search" id="site-search" role="search" '
            r'method="get" action="[./]*search"',
            page,
        ), path
        assert '<label for="site-search-q">Search models and architectures</label>' in page
        assert '<input id="site-search-q" type="search" name="q"' in page
    page = client.get("/search", params={"q": "qwen3"}).text
    assert '<a href="./map/qwen3">qwen3</a>' in page
    assert '<a href="./models/Qwen/Qwen3-4B">Qwen/Qwen3-4B</a>' in page
    assert 'value="qwen3"' in page  # the box keeps the query
    assert client.get("/search.json", params={"q": "qwen3"}).json()["results"][0]["name"] == "qwen3"
    assert "Nothing matches" in client.get("/search", params={"q": "zzz"}).text


@pytest.fixture(scope="module")
def hostile_client(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('arch-xss') / 'dayone.db'}"
    store = open_store(url)
    evil = '"><svg onload=alert(1)>'
    bad = lined(
        rec(f"x{evil}", "vllm", "load", "fail", message=XSS, failure_class="cls"),
        {"source": "release", "repo": evil, "revision": XSS},
    )
    bad["reproduce"] = XSS
    model = rec("m", "vllm", "load", "pass", minute=1)
    model["model"] = {"id": f"org/{evil}", "revision": "r", "model_type": XSS}
    with store.writing() as s:
        assert ingest_records(s, [bad, model]).rejected == []
    store.close()
    with TestClient(create_app(url)) as c:
        yield c


def test_hostile_text_is_escaped_on_the_arch_page_and_in_search(hostile_client):
    evil = '"><svg onload=alert(1)>'
    hits = hostile_client.get("/api/v1/search", params={"q": "svg"}).json()["results"]
    assert {h["kind"] for h in hits} == {"architecture", "model"}
    arch = next(h for h in hits if h["kind"] == "architecture")
    page = hostile_client.get(arch["href"])
    assert page.status_code == 200
    assert evil not in page.text and XSS not in page.text and "<svg onload" not in page.text
    assert str(escape(XSS)) in page.text  # the message and the bare command, as text
    for params in ({"q": "svg"}, {"q": XSS}):
        page = hostile_client.get("/search", params=params).text
        assert XSS not in page and "<svg onload" not in page


# Model pages: the arch tier


def test_a_model_page_shows_its_architecture_lineage_and_since_when(client):
    data = client.get("/models/Qwen/Qwen3-4B.json").json()
    (copy,) = data["arch_tier"]
    assert copy["architecture"] == "qwen3" and copy["from_this_model"] is True
    spans = {e["engine"]: e["span"] for e in copy["engines"]}
    # vLLM: green in 0.8.0, an `error` (ours) in 0.9.0 says nothing about the engine.
    assert spans["vllm"]["supported_since"] == "0.8.0"
    assert spans["sglang"]["now"] is None
    assert client.get("/api/v1/models/Qwen/Qwen3-4B").json()["arch_tier"] == data["arch_tier"]
    page = client.get("/models/Qwen/Qwen3-4B").text
    assert '<a href="../../map/qwen3">qwen3</a>' in page
    assert "(this model's own files)" in page and "supported since vllm 0.8.0" in page
    # The summaries keep the model's own supported-since per engine.
    assert re.search(r"<th>vllm</th>.*?<td>0.9.0</td><td>0.9.0</td>", page, re.S)
    # A copy's own page names itself; a model of a type never swept says how to sweep it.
    assert client.get("/models/arch/llama.json").json()["arch_tier"][0]["lineage"] == LLAMA


def test_new_sweep_results_reach_the_cached_arch_page(tmp_path):
    url = filled_store(tmp_path, arch_records())
    with TestClient(create_app(url)) as c:
        assert c.get("/map/gpt_oss.json").json()["engines"][0]["releases"] == [
            {"version": "0.5.0", "status": "pass"}
        ]
        store = open_store(url)
        with store.writing() as s:
            assert (
                ingest_records(
                    s, [rec("gpt_oss", "sglang", "load", "fail", version="0.6.0", minute=59)]
                ).rejected
                == []
            )
        store.close()
        sglang = c.get("/map/gpt_oss.json").json()["engines"][0]
        assert sglang["span"]["text"] == "broken since sglang 0.6.0; last green 0.5.0"


def test_the_static_export_writes_the_arch_pages_and_the_search_index(db_url, tmp_path):
    out = tmp_path / "site"
    export(out, db_url)
    for arch in ("llama", "qwen3", "gpt_oss", "mamba", "bert"):
        assert (out / "map" / f"{arch}.html").is_file() and (out / "map" / f"{arch}.json").is_file()
        assert (out / "api" / "v1" / "map" / f"{arch}.json").is_file()
    page = (out / "map" / "llama.html").read_text()
    assert 'href="../cells/arch/llama/vllm.html"' in page and 'href="../map.html"' in page
    red = re.search(r'href="../api/v1/results/(\d+).json"', page)
    assert red and (out / "api" / "v1" / "results" / f"{red.group(1)}.json").is_file()
    index = (out / "search.html").read_text()
    assert '<a href="./map/qwen3.html">qwen3</a>' in index
    assert '<a href="./models/Qwen/Qwen3-4B.html">Qwen/Qwen3-4B</a>' in index
    assert 'action="./search.html"' in (out / "index.html").read_text()
    model = (out / "models" / "Qwen" / "Qwen3-4B.html").read_text()
    assert 'href="../../map/qwen3.html"' in model
    for page in [*(out / "map").glob("*.html"), out / "search.html", out / "map.html"]:
        for ref in local_refs(page):  # every link of the new pages lands on a written file
            target = (page.parent / unquote(urlsplit(ref).path)).resolve()
            assert target.is_file(), f"{page.relative_to(out)} links to missing {ref}"
