"""The unattended loop against the fake index, as the nightly workflow runs it: a newly
published engine release is discovered and planned (`dayone plan --matrix arch`), probed (the
jobs' result records), ingested (`dayone ingest`), diffed and published (`dayone export SITE
--data DIR`: the release page, the feed entry, the support data), and the next night plans
nothing for it.

Two variants: the fast one replays the jobs' records (the planning, ingest, diff and publish
steps are the real ones); the slow one (`-m slow`) probes a fixture model in the new
transformers release for real (`dayone nightly --watchlist ... --engine transformers==V`,
the workflow's job step) and checks that the second night's model-level plan is empty too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matrix import engine_watch as ew
from tests.fakeindex import FakeIndex
from tests.test_engine_watch import HOST, _only

NEW = "5.23.0"  # the registry's transformers: its environment is the one the cache holds
LATER = ("5.24.0", "5.25.0")
FIXTURE = "dayone-fixtures/llama"


def rec(
    model: str,
    version: str,
    stage: str,
    status: str,
    at: dt.datetime,
    failure_class: str | None = None,
    run: str = "seed",
) -> dict:
    return {
        "schema_version": 1,
        "run_id": f"{run}-{version}",
        "model": {"id": model, "revision": "r1", "model_type": model.split("/")[-1]},
        "engine": {"name": "transformers", "version": version, "hardware": "cpu"},
        "tier": "arch",
        "stage": stage,
        "status": status,
        "failure_class": failure_class,
        "message": None if status == "pass" else f"{failure_class}: seeded",
        "log_excerpt": None,
        "metrics": {},
        "started_at": at.isoformat(),
        "duration_s": 1.0,
        "reproduce": None,
    }


def earlier_nights(versions: list[str], now: dt.datetime) -> list[dict]:
    """What the store holds before the release appears: every watched release probed; in the
    newest, gemma4_text unknown, qwen3_5_moe_text green, the fixture model red."""
    out = []
    for i, v in enumerate(versions):
        at = now - dt.timedelta(days=30 - i)
        out.append(rec("arch/llama", v, "load", "pass", at))
        newest = i == len(versions) - 1
        out.append(rec("arch/gemma4_text", v, "load", "fail", at, "unsupported_architecture"))
        out.append(rec("arch/qwen3_5_moe_text", v, "load", "pass", at))
        out.append(rec(FIXTURE, v, "load", "fail" if newest else "pass", at, "crash" if newest else None))
    return out


def invoke(*args: str) -> str:
    from service.cli import app

    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


@pytest.fixture()
def night(tmp_path, monkeypatch):
    """The fake index before the release (5.23.0 and later not yet published), the store with
    the earlier nights, the CLI arguments the workflow's steps share."""
    monkeypatch.setattr(ew.Platform, "current", classmethod(lambda cls: HOST))
    db = f"sqlite:///{tmp_path / 'dayone.db'}"
    with FakeIndex() as index:
        answer = index.projects["transformers"]
        held = {v: answer["releases"].pop(v) for v in (NEW, *LATER)}
        watch = _only(tmp_path, "transformers")
        args = ["--index-url", index.url, "--engine-watch", str(watch), "--db", db]
        _w, found, _work = ew.plan_engine_releases(db, index_url=index.url, watch_path=watch, platform=HOST)
        versions = [r.version for r in found.releases]
        assert versions[-1] == "5.22.2" and found.errors == []
        now = dt.datetime.now(dt.timezone.utc)
        path = tmp_path / "seed.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in earlier_nights(versions, now)))
        invoke("ingest", str(path), "--db", db)
        yield {"index": index, "held": held, "args": args, "db": db, "now": now, "tmp": tmp_path}


def plan_matrix(args: list[str]) -> list[dict]:
    return json.loads(invoke("plan", "--matrix", "arch", "--shards", "2", *args).strip().splitlines()[-1])[
        "include"
    ]


def publish_and_check(n: dict, site: Path, data: Path) -> dict:
    invoke("export", str(site), "--data", str(data), "--db", n["db"])
    page = (site / "engines" / "transformers" / f"{NEW}.json").read_text()
    release = json.loads(page)
    assert (site / "engines" / "transformers" / f"{NEW}.html").is_file()
    assert (site / "api/v1/engines/transformers" / f"{NEW}/diff.json").is_file()
    feed = (site / "feed.atom").read_text()
    assert f"transformers {NEW}: " in feed and f"engines/transformers/{NEW}.html" in feed
    return {"release": release, "feed": feed, "data": json.loads((data / "data.json").read_text())}


def test_a_new_release_is_found_planned_probed_diffed_published_then_not_again(night):
    n = night
    # before: the registry's version is probed already; nothing sweeps
    assert [(j["engine"], j["sweep"]) for j in plan_matrix(n["args"])] == [(f"transformers=={NEW}", False)]
    # the index gains the release
    n["index"].publish("transformers", NEW, n["held"][NEW])
    jobs = plan_matrix(n["args"])
    assert [(j["engine"], j["shard"], j["sweep"], j["models"]) for j in jobs] == [
        (f"transformers=={NEW}", "1/2", True, True),
        (f"transformers=={NEW}", "2/2", True, False),
    ]
    # each job writes its records (the workflow's --out artifacts): gemma4_text now known,
    # qwen3_5_moe_text broke at parity, the fixture model fixed
    at = n["now"] - dt.timedelta(hours=1)
    results = n["tmp"] / "results"
    results.mkdir()
    by_shard = {
        "1/2": [
            rec("arch/llama", NEW, "load", "pass", at, run="night"),
            rec("arch/gemma4_text", NEW, "load", "pass", at, run="night"),
            rec(FIXTURE, NEW, "load", "pass", at, run="night"),
        ],
        "2/2": [
            rec("arch/qwen3_5_moe_text", NEW, "load", "pass", at, run="night"),
            rec("arch/qwen3_5_moe_text", NEW, "parity", "fail", at, "wrong_output", "night"),
        ],
    }
    for i, job in enumerate(jobs):
        (results / f"arch-{i}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in by_shard[job["shard"]])
        )
    invoke("ingest", *sorted(str(p) for p in results.glob("*.jsonl")), "--db", n["db"])
    out = publish_and_check(n, n["tmp"] / "site", n["tmp"] / "data")
    release = out["release"]
    assert release["previous"] == "5.22.2"
    assert [c["model"] for c in release["fixed"]] == ["arch/gemma4_text", FIXTURE]
    assert [c["describe"] for c in release["broke"]] == ["qwen3_5_moe_text parity wrong_output"]
    headline = "transformers 5.23.0: 2 cells fixed, 1 broken: qwen3_5_moe_text parity wrong_output"
    assert release["headline"] == headline and headline in out["feed"]
    support = out["data"]["architectures"]
    assert support["gemma4_text"]["__compat"]["support"]["transformers"] == {"version_added": NEW}
    assert support["qwen3_5_moe_text"]["__compat"]["support"]["transformers"]["version_removed"] == NEW
    # the second night: the release is probed, nothing new is planned
    again = plan_matrix(n["args"])
    assert [(j["engine"], j["sweep"]) for j in again] == [(f"transformers=={NEW}", False)]
    lines = [
        json.loads(x) for x in invoke("discover", "--json", *n["args"]).splitlines() if x.startswith("{")
    ]
    states = {r["version"]: r["state"] for r in lines if r.get("kind") == "engine_release"}
    assert states[NEW] == "probed" and "new" not in states.values()


@pytest.mark.slow
def test_the_loop_with_a_real_probe_of_a_fixture_model(night, tf_env, tmp_path):
    from tests.conftest import build_fixtures, run_dayone

    n = night
    fixtures = build_fixtures(tf_env, tmp_path / "fx", ["llama"])
    watchlist = tmp_path / "watchlist.toml"
    watchlist.write_text(f'orgs = []\nlocal = ["{fixtures / "llama"}"]\n')
    n["index"].publish("transformers", NEW, n["held"][NEW])
    jobs = plan_matrix(n["args"])
    assert jobs[0]["engine"] == f"transformers=={NEW}" and jobs[0]["models"]
    out_file = tmp_path / "results" / "arch-0.jsonl"
    out_file.parent.mkdir()
    # the workflow's job step, the watchlist's models only (the sweep is the same shell)
    run_dayone(
        "nightly",
        "--watchlist",
        str(watchlist),
        "--engine",
        jobs[0]["engine"],
        "--tier",
        "arch",
        "--jobs",
        "1",
        "--no-store",
        "--no-confirm",
        "--out",
        str(out_file),
        timeout=600,
    )
    records = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert {(r["model"]["id"], r["stage"], r["status"]) for r in records} == {
        (FIXTURE, "load", "pass"),
        (FIXTURE, "generate", "pass"),
    }
    invoke("ingest", str(out_file), "--db", n["db"])
    out = publish_and_check(n, tmp_path / "site", tmp_path / "data")
    assert [c["model"] for c in out["release"]["fixed"]] == [FIXTURE]
    # worked in the older releases, broke in 5.22.2, works again since the new one
    assert out["data"]["models"][FIXTURE]["__compat"]["support"]["transformers"][0] == {"version_added": NEW}
    # the second night plans nothing: no release sweeps, no model is probed again
    assert [(j["engine"], j["sweep"]) for j in plan_matrix(n["args"])] == [(f"transformers=={NEW}", False)]
    proc = run_dayone(
        "plan",
        "--watchlist",
        str(watchlist),
        "--engine",
        f"transformers=={NEW}",
        "--db",
        n["db"],
        timeout=300,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1])["tasks"] == 0
    assert os.environ.get("DAYONE_HOME")
