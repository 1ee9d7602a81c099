"""What each engine release fixed, broke and newly greened (matrix/release_diff.py), on the
release page `/engines/{name}/{version}` (+ .json), in the API and in the Atom feed."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient

from matrix import release_diff as RD
from matrix.ingest import ingest_records
from matrix.store import open_store
from matrix.summary import Observation
from service.app import create_app

T0 = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.timezone.utc)
XSS = '<script>alert("x")</script>'


def ob(model, version, stage, status, day=0, failure_class=None, message=None, engine="vllm"):
    return Observation(
        model=model,
        engine=engine,
        engine_version=version,
        stage=stage,
        status=status,
        started_at=T0 + dt.timedelta(days=day),
        failure_class=failure_class,
        message=message,
    )


def probe(model, version, day, load="pass", generate="pass", parity="pass", fc=None, msg=None):
    return [
        ob(model, version, "load", load, day, fc if load not in ("pass",) else None, msg),
        ob(
            model,
            version,
            "generate",
            generate,
            day,
            fc if generate not in ("pass", "skipped") else None,
            msg,
        ),
        ob(model, version, "parity", parity, day, fc if parity not in ("pass", "skipped") else None, msg),
    ]


def history() -> list[Observation]:
    """Five architectures over vllm 0.31.0 -> 0.32.0 (and 0.30.0 before, 0.32.0.post1 after)."""
    obs: list[Observation] = []
    # fixed in 0.32.0: unknown architecture before
    for arch in ("arch/gemma4_text", "arch/llama4_text", "arch/nemotron_h"):
        obs += probe(arch, "0.31.0", 1, "fail", "skipped", "skipped", fc="unsupported_architecture")
        obs += probe(arch, "0.32.0", 2)
    # broke in 0.32.0: parity wrong_output (a regression)
    obs += probe("arch/qwen3_5_moe_text", "0.31.0", 1)
    obs += probe(
        "arch/qwen3_5_moe_text",
        "0.32.0",
        2,
        parity="fail",
        fc="wrong_output",
        msg="greedy tokens diverge at 3",
    )
    # first seen in 0.32.0, green: newly green
    obs += probe("arch/gpt_oss", "0.32.0", 2)
    # not probed in 0.31.0: compared with 0.30.0
    obs += probe("arch/mistral", "0.30.0", 0, "fail", "skipped", "skipped", fc="crash")
    obs += probe("arch/mistral", "0.32.0", 2)
    # an infra error in 0.32.0 is no change
    obs += probe("arch/phi3", "0.31.0", 1)
    obs += [ob("arch/phi3", "0.32.0", "load", "error", 2, "infra")]
    # degraded -> pass is newly green, not fixed
    obs += probe("arch/granite", "0.31.0", 1, parity="degraded")
    obs += probe("arch/granite", "0.32.0", 2)
    # a post release (PEP 440: after 0.32.0) that changes nothing
    obs += probe("arch/gpt_oss", "0.32.0.post1", 3)
    return obs


def test_each_release_against_the_one_before():
    diffs = {d.version: d for d in RD.release_diffs("vllm", history())}
    assert list(diffs) == ["0.30.0", "0.31.0", "0.32.0", "0.32.0.post1"]
    d = diffs["0.32.0"]
    assert d.previous == "0.31.0"
    assert [c.model for c in d.fixed] == [
        "arch/gemma4_text",
        "arch/llama4_text",
        "arch/mistral",
        "arch/nemotron_h",
    ]
    mistral = next(c for c in d.fixed if c.model == "arch/mistral")
    assert mistral.before_version == "0.30.0" and mistral.before.why == "load crash"
    assert [c.model for c in d.broke] == ["arch/qwen3_5_moe_text"]
    broke = d.broke[0]
    assert broke.regression and broke.after.why == "parity wrong_output"
    assert broke.describe() == "qwen3_5_moe_text parity wrong_output"
    assert [c.model for c in d.new_green] == ["arch/gpt_oss", "arch/granite"]
    assert "arch/phi3" not in {c.model for c in d.fixed + d.broke + d.new_green}
    assert d.verdicts["arch/phi3"].status == "error" and d.counts["pass"] == 6
    assert d.headline() == (
        "vllm 0.32.0: 4 architectures fixed, 1 broken, 2 newly green: qwen3_5_moe_text parity wrong_output"
    )
    assert diffs["0.32.0.post1"].headline() == "vllm 0.32.0.post1: no change against 0.32.0"
    assert diffs["0.30.0"].headline() == "vllm 0.30.0: first release probed, 0 of 1 architecture green"
    # a later error does not hide the last real verdict: 0.32.0.post1 compares phi3 with 0.31.0
    assert RD.release_diff("vllm", "0.32.0.POST1", history()).version == "0.32.0.post1"
    assert RD.release_diff("vllm", "9.9", history()) is None


def test_headline_nouns_and_many_breaks():
    obs = []
    for i in range(7):
        obs += probe(f"org/m{i}", "1.0", 0) + probe(f"org/m{i}", "1.1", 1, "timeout", "skipped", "skipped")
    d = RD.release_diffs("vllm", obs)[-1]
    assert d.headline().startswith("vllm 1.1: 7 models broken: org/m0 load timeout; ")
    assert d.headline().endswith("; and 2 more")
    mixed = (
        probe("org/a", "1.0", 0, "fail", "skipped", "skipped", fc="crash")
        + probe("org/a", "1.1", 1)
        + probe("arch/b", "1.0", 0, "fail", "skipped", "skipped", fc="crash")
        + probe("arch/b", "1.1", 1)
    )
    assert RD.release_diffs("vllm", mixed)[-1].headline() == "vllm 1.1: 2 cells fixed"


def test_the_latest_result_of_a_stage_decides():
    obs = probe("m", "1.0", 0) + probe("m", "1.1", 1, "fail", "skipped", "skipped", fc="crash")
    obs += probe("m", "1.1", 2)  # rerun green the next night: 1.1 is green
    d = RD.release_diffs("vllm", obs)[-1]
    assert not d.changed and d.verdicts["m"].status == "pass"


def test_a_quantized_copys_red_is_not_the_releases():
    """The map shows quantize apart from the engine's cell; a release's verdict, its diff and
    the support data leave it out the same way (llama.cpp 0.3.36 on Gemma 4 E2B)."""
    obs = probe("m", "1.0", 0) + probe("m", "1.1", 1)
    obs.append(ob("m", "1.1", "quantize", "fail", 1, failure_class="wrong_output", engine="vllm"))
    d = RD.release_diffs("vllm", obs)[-1]
    assert not d.changed and d.verdicts["m"].status == "pass"


# The site


def record(o: Observation) -> dict:
    return {
        "schema_version": 1,
        "run_id": f"night-{o.engine_version}-{o.started_at:%d}",
        "model": {"id": o.model, "revision": "r1", "model_type": o.model.split("/")[-1]},
        "engine": {"name": o.engine, "version": o.engine_version, "hardware": "cpu"},
        "tier": "arch",
        "stage": o.stage,
        "status": o.status,
        "failure_class": o.failure_class,
        "message": o.message,
        "log_excerpt": None,
        "metrics": {},
        "started_at": (
            o.started_at + dt.timedelta(seconds=["load", "generate", "parity"].index(o.stage))
        ).isoformat(),
        "duration_s": 0.1,
        "reproduce": None,
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('rd') / 'dayone.db'}"
    store = open_store(url)
    obs = (
        history()
        + probe(f"arch/{XSS}", "0.31.0", 1)
        + probe(f"arch/{XSS}", "0.32.0", 2, "fail", "skipped", "skipped", fc="crash", msg=XSS)
    )
    with store.writing() as s:
        report = ingest_records(s, [record(o) for o in obs])
    assert report.rejected == []
    store.close()
    with TestClient(create_app(url)) as c:
        yield c


def test_release_page_twin_and_api(client):
    data = client.get("/engines/vllm/0.32.0.json").json()
    assert data["previous"] == "0.31.0" and data["next"] == "0.32.0.post1"
    assert [c["label"] for c in data["broke"]] == [XSS, "qwen3_5_moe_text"]
    assert all(c["regression"] for c in data["broke"])
    assert len(data["fixed"]) == 4 and data["regressions"] == 2
    assert data["headline"].startswith("vllm 0.32.0: 4 architectures fixed, 2 broken, 2 newly green")
    assert client.get("/api/v1/engines/vllm/0.32.0/diff").json() == data
    page = client.get("/engines/vllm/0.32.0")
    assert page.status_code == 200 and "qwen3_5_moe_text" in page.text
    assert XSS not in page.text and "&lt;script&gt;" in page.text
    assert 'href="../../engines/vllm/0.31.0"' in page.text
    assert client.get("/engines/vllm/7.0").status_code == 404
    assert client.get("/api/v1/engines/vllm/7.0/diff").status_code == 404
    assert client.get("/api/v1/engines/nope/1.0/diff").status_code == 404
    engine = client.get("/engines/vllm.json").json()
    row = next(v for v in engine["versions"] if v["version"] == "0.32.0")
    assert row["headline"] == data["headline"] and row["broke"] == [c["model"] for c in data["broke"]]
    assert 'href="../engines/vllm/0.32.0"' in client.get("/engines/vllm").text
    spec = client.get("/openapi.json").json()
    assert "/api/v1/engines/{name}/{version}/diff" in spec["paths"]


def test_feed_has_one_entry_per_release_that_changed(client):
    from service import feed

    with client.app.state.store.session() as s:
        data = feed.feed_view(s, now=T0 + dt.timedelta(days=4), days=7)
    releases = [e for e in data["entries"] if e["kind"] == "release"]
    # newest first; 0.30.0 (the first probed) and 0.32.0.post1 (no change) have none
    assert [e["engine_version"] for e in releases] == ["0.32.0", "0.31.0"]
    assert releases[1]["title"] == "vllm 0.31.0: 3 architectures newly green"
    assert releases[0]["title"].startswith("vllm 0.32.0: 4 architectures fixed, 2 broken")
    assert "qwen3_5_moe_text parity wrong_output" in releases[0]["title"]
    r = client.get("/feed.atom", params={"days": 60})
    root = ET.fromstring(r.content)  # well-formed with the payload in an id
    ns = {"a": "http://www.w3.org/2005/Atom"}
    links = [
        e.find("a:link", ns).get("href")
        for e in root.findall("a:entry", ns)
        if e.find("a:category", ns).get("term") == "release"
    ]
    assert links == ["./engines/vllm/0.32.0", "./engines/vllm/0.31.0"]
