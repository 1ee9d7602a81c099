"""The nightly loop against the fake hub: discover -> plan -> shrink -> probe -> store.

Real transformers probes on shrunk copies of the recorded releases. A second night plans
nothing; a new commit is new work; a run killed halfway and restarted ends with exactly the
rows of an uninterrupted run. The sweep runs a representative subset of architectures.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from matrix.nightly import Journal, done_rows, next_task, plan_status, probe_options, synthetic_records
from matrix.plan import ProbeTask
from tests.fakehub import FakeHub

ROOT = Path(__file__).resolve().parent.parent
WATCH = 'orgs = ["Qwen"]\nmodels = ["google/gemma-4-E2B-it", "google/gemma-docs-assets"]\n'


# Pure parts


def task(model: str, engine: str = "transformers", heavy: bool = False) -> ProbeTask:
    return ProbeTask(model, "sha", f"env-{engine}", engine, "1", ("load", "generate"), heavy=heavy)


def test_one_heavy_engine_at_a_time_light_ones_pass_it():
    pending = [task("a", "vllm", heavy=True), task("b"), task("c", "vllm", heavy=True)]
    assert next_task(pending, heavy_running=0) == 0
    assert next_task(pending, heavy_running=1) == 1
    assert next_task([pending[0], pending[2]], heavy_running=1) is None


def test_copies_are_shrunk_in_the_reference_transformers_not_an_older_release_probed(monkeypatch):
    """A sweep over transformers releases shrinks every copy in the reference release: 4.55
    does not know Qwen 3.5, so shrinking there would be a red about us in every engine."""
    from types import SimpleNamespace

    import matrix.environments
    from matrix import nightly
    from matrix.plan import EnvironmentTarget
    from probes.engines import get_spec

    reference = get_spec("transformers").default_version

    def target(engine, version):
        return EnvironmentTarget(f"env-{engine}-{version}", engine, version, ("load",))

    built = []
    monkeypatch.setattr(
        matrix.environments,
        "ensure_env",
        lambda engine, version=None, **kw: (
            built.append((engine, version)) or SimpleNamespace(python="/ref/built")
        ),
    )
    old = (target("transformers", "4.55.4"), SimpleNamespace(python="/old"))
    vllm = (target("vllm", "0.27.0"), SimpleNamespace(python="/vllm"))
    probed_ref = (target("transformers", reference), SimpleNamespace(python="/ref/probed"))
    assert nightly._reference_python([old, vllm, probed_ref], print) == "/ref/probed"
    assert built == []
    assert nightly._reference_python([old, vllm], print) == "/ref/built"
    assert built == [("transformers", None)]


def test_synthetic_records_follow_the_contract(validate_record):
    records = synthetic_records(
        task("gated/x"), status="skipped", message="gated: no access", tier="arch", run_id="r1"
    )
    assert [r["stage"] for r in records] == ["load", "generate"]
    for r in records:
        validate_record(r)
    assert done_rows(records) == [
        ("gated/x", "sha", "env-transformers", "load", "skipped"),
        ("gated/x", "sha", "env-transformers", "generate", "skipped"),
    ]
    assert plan_status("error", "shrink") == "error-final"  # deterministic: not retried
    assert plan_status("error", "infra") == "error"


def test_fixture_tokenizers_may_fall_back_release_ones_may_not(tmp_path):
    (tmp_path / "dayone.json").write_text('{"tier": "arch", "tokenizer": "fixture"}')
    assert probe_options(tmp_path) == {"pretokenizer_fallback": True}
    (tmp_path / "dayone.json").write_text(
        '{"tier": "arch", "tokenizer": "release", "engine_options": {"convert_args": ["--no-mtp"]}}'
    )
    assert probe_options(tmp_path) == {"convert_args": ["--no-mtp"]}
    (tmp_path / "dayone.json").write_text('{"id": "dayone-fixtures/llama"}')
    assert probe_options(tmp_path) == {}


def test_journal_survives_a_torn_line(tmp_path):
    j = Journal(tmp_path / "j.jsonl")
    j.append([{"a": 1}, {"a": 2}])
    with open(j.path, "a") as f:
        f.write('{"a": 3')  # killed mid-write
    assert j.read() == [{"a": 1}, {"a": 2}]


# The real loop


def nightly(
    home: Path, hub: FakeHub, *extra: str, wait: bool = True, timeout: float = 900
) -> subprocess.Popen | subprocess.CompletedProcess:
    (home / "watch.toml").write_text(WATCH)
    argv = [
        sys.executable,
        "-m",
        "matrix.nightly",
        "--watchlist",
        str(home / "watch.toml"),
        "--endpoint",
        hub.url,
        "--engine",
        "transformers",
        "--jobs",
        "2",
        *extra,
    ]
    env = {**os.environ, "DAYONE_HOME": str(home), "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1"}
    if not wait:
        return subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def summary(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rows(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "dayone.db") as db:
        return db.execute(
            "select m.model_id, m.revision, e.environment_id, r.stage, r.status, r.tier,"
            " r.message, r.reproduce from results r"
            " join model_revisions m on m.id = r.model_revision_pk"
            " join environments e on e.id = r.environment_pk"
        ).fetchall()


@pytest.fixture(scope="module")
def first_night(tf_env, tmp_path_factory):
    home = tmp_path_factory.mktemp("night")
    hub = FakeHub(faults=False).start()
    try:
        proc = nightly(home, hub)
        yield home, hub, summary(proc)
    finally:
        hub.stop()


def test_first_night_probes_the_new_models_in_the_arch_tier(first_night):
    home, hub, report = first_night
    assert report["discovered"] == 4 and report["tasks"] == 4 and report["skipped"] == 2
    got = {(r[0], r[3]): r for r in rows(home)}
    assert len(got) == 8 == len(rows(home))  # 4 models x 2 stages, each stored once
    for model in ("Qwen/Qwen3-0.6B", "Qwen/Qwen3.5-35B-A3B-Text"):
        for stage in ("load", "generate"):
            row = got[(model, stage)]
            assert row[1] == hub.repos[model].sha  # filed under the release's sha
            assert (row[4], row[5]) == ("pass", "arch")
            assert "probes.shrink" in row[7]  # the bare command rebuilds the shrunk copy
    assert got[("google/gemma-4-E2B-it", "load")][4:7] == (
        "skipped",
        "arch",
        "gated: no access with this token",
    )
    assert got[("google/gemma-docs-assets", "generate")][4] == "skipped"


def test_second_night_plans_nothing_then_a_commit_is_new_work(first_night):
    home, hub, _ = first_night
    before = rows(home)
    t0 = time.monotonic()
    quiet = summary(nightly(home, hub))
    assert quiet["tasks"] == 0 and quiet["records"] == 0
    assert rows(home) == before
    assert time.monotonic() - t0 < 120  # seconds, not a re-probe (generous: shared machine)

    sha = hub.push_commit(
        "Qwen/Qwen3-0.6B",
        {
            "config.json": json.dumps(
                {**json.loads(hub.repos["Qwen/Qwen3-0.6B"].files["config.json"]), "rope_theta": 5e6}
            )
        },
    )
    changed = summary(nightly(home, hub))
    assert changed["tasks"] == 1 and changed["statuses"] == {"pass": 2}
    new = [r for r in rows(home) if r[1] == sha]
    assert {(r[0], r[3], r[4]) for r in new} == {
        ("Qwen/Qwen3-0.6B", "load", "pass"),
        ("Qwen/Qwen3-0.6B", "generate", "pass"),
    }


def test_killed_halfway_and_restarted_ends_with_the_same_rows(first_night, tmp_path):
    ref_home, _, _ = first_night
    hub = FakeHub(faults=False).start()
    try:
        proc = nightly(tmp_path, hub, "--jobs", "1", wait=False)
        journal = tmp_path / "nightly" / "journal.jsonl"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and '"status": "pass"' in journal.read_text():
                break
            time.sleep(0.2)
        assert proc.poll() is None, "finished before it could be killed: " + proc.stderr.read()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        partial = rows(tmp_path) if (tmp_path / "dayone.db").exists() else []
        assert len(partial) < 8
        nightly(tmp_path, hub)
    finally:
        hub.stop()

    def key(r):  # what a row says, without times, run ids or local paths
        return r[0], r[1], r[2], r[3], r[4], r[5], r[6]

    resumed = Counter(key(r) for r in rows(tmp_path))
    reference = Counter(
        key(r) for r in rows(ref_home) if r[0] != "Qwen/Qwen3-0.6B" or r[1] != _pushed_sha(ref_home)
    )
    assert max(resumed.values()) == 1  # nothing stored twice
    assert resumed == reference, (
        f"only after the kill: {sorted(resumed - reference)}; "
        f"only uninterrupted: {sorted(reference - resumed)}"
    )


def _pushed_sha(home: Path) -> str:
    """The sha pushed by the second-night test (if it ran first), to compare first nights."""
    with sqlite3.connect(home / "dayone.db") as db:
        revs = [
            r[0]
            for r in db.execute(
                "select revision from model_revisions where model_id = 'Qwen/Qwen3-0.6B' order by id"
            )
        ]
    return revs[1] if len(revs) > 1 else ""


def test_sweep_subset_reports_every_architecture(tf_env, tmp_path):
    """CI's representative subset: motivating families, one the rules refuse, one unknown."""
    env = {**os.environ, "DAYONE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    types = "gemma4_text,qwen3_5_moe_text,nemotron_h,musicgen"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "matrix.nightly",
            "--sweep",
            "--types",
            types,
            "--engine",
            "transformers",
            "--jobs",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {(r[0], r[3]): r for r in rows(tmp_path)}
    assert len(got) == 8
    for t in ("gemma4_text", "qwen3_5_moe_text", "nemotron_h"):
        assert got[(f"arch/{t}", "generate")][4] == "pass", got[(f"arch/{t}", "generate")]
    refused = got[("arch/musicgen", "load")]
    assert refused[4] == "error" and refused[6].startswith("shrink failed: musicgen")
    again = subprocess.run(proc.args, env=env, capture_output=True, text=True, timeout=600)
    assert json.loads(again.stdout.strip().splitlines()[-1])["tasks"] == 0  # refusals are final


def test_nightly_probes_a_new_repo_in_every_engine(tf_env, tmp_path):
    """`dayone nightly` against the fake hub: a new release, shrunk, in all four engines."""
    from probes.engines import get_spec

    engines = ("transformers", "llamacpp", "vllm", "sglang")
    (tmp_path / "watch.toml").write_text('models = ["Qwen/Qwen3-0.6B"]\n')
    with FakeHub(faults=False) as hub:
        argv = [
            sys.executable,
            "-m",
            "service.cli",
            "nightly",
            "--watchlist",
            str(tmp_path / "watch.toml"),
            "--endpoint",
            hub.url,
            "--jobs",
            "3",
            "--max-heavy",
            "2",
            *[a for e in engines for a in ("--engine", e)],
        ]
        env = {
            **os.environ,
            "DAYONE_HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
        assert first.returncode == 0, first.stderr[-3000:]
        again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        sha = hub.repos["Qwen/Qwen3-0.6B"].sha
    assert summary(first)["tasks"] == 4 and summary(again)["tasks"] == 0
    with sqlite3.connect(tmp_path / "dayone.db") as db:
        got = {
            (e, s): (st, msg)
            for e, s, st, msg in db.execute(
                "select e.engine_name, r.stage, r.status, r.message from results r"
                " join environments e on e.id = r.environment_pk"
                " join model_revisions m on m.id = r.model_revision_pk"
                " where m.model_id = 'Qwen/Qwen3-0.6B' and m.revision = ?",
                (sha,),
            )
        }
    for engine in engines:
        for stage in get_spec(engine).stages:
            status, message = got[(engine, stage)]
            assert status != "error", (engine, stage, message)  # a verdict, not our failure
    for engine in ("transformers", "llamacpp", "vllm"):
        assert got[(engine, "load")][0] == "pass" and got[(engine, "generate")][0] == "pass"


def test_an_environment_that_cannot_be_made_is_left_out_with_why_and_the_others_go_on(monkeypatch):
    """One engine release that does not resolve (a pairing with no solution on the index) must
    not stop the sweep of the others; it is no verdict about the engine, which never ran."""
    from types import SimpleNamespace

    from matrix import environments, nightly

    def ensure_env(name, version=None, say=print, resolution="today"):
        if version == "0.20.0":
            raise RuntimeError("resolving peft==0.20.0 ... failed: No solution found")
        return SimpleNamespace(environment_id=f"{name}-{version}", version=version or "0.21.2")

    monkeypatch.setattr(environments, "ensure_env", ensure_env)
    said: list[str] = []
    unresolved: list[str] = []
    envs = nightly.resolve_environments(
        ["peft==0.20.0", "peft==0.22.0"], say=said.append, resolutions=("release",), unresolved=unresolved
    )
    assert [t.environment_id for t, _ in envs] == ["peft-0.22.0"]
    assert envs[0][0].stages == ("finetune",)
    assert len(unresolved) == 1 and unresolved[0].startswith("peft==0.20.0 (release): not probed")
    assert "No solution found" in unresolved[0] and unresolved[0] in said
    with pytest.raises(RuntimeError, match="No solution"):  # asked to raise, it does
        nightly.resolve_environments(["peft==0.20.0"], say=said.append, resolutions=("release",))
