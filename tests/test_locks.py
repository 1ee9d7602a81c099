"""Locked environments: an engine release resolved as on its release day and as installed today,
each a lock whose hash is the environment's id; rebuilt alike on another machine; what moved
between two locks on the pages and in the feed.

The uv-driven tests resolve and install real (tiny) wheels from a local fake index with
recorded upload times (tests/fakeindex/wheels.py), as the fake hub stands in for the hub.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from matrix import environments, locks, release_diff
from matrix import summary as S
from probes.engines import EngineSpec
from tests.fakeindex.wheels import WheelIndex

RELEASE_DAY = "2026-11-01T10:00:00Z"
TOY = EngineSpec(
    name="toy",
    module="toyengine",
    package="toyengine",
    default_version="1.0",
    stages=("load",),
    requirements=("toyengine=={version}",),
)

UV_LOCK = """\
torch==2.13.0+cpu \\
    --hash=sha256:bbbb
    # via -r requirements.in
jinja2==3.1.6 \\
    --hash=sha256:2222 \\
    --hash=sha256:1111
    # via transformers
llama-cpp-python==0.3.36 \\
    --hash=sha256:cccc
"""


# Pure


def test_a_locks_content_ignores_comments_and_order_and_keeps_every_hash():
    reordered = (
        "jinja2==3.1.6 --hash=sha256:1111 --hash=sha256:2222\n# a note\n"
        "llama-cpp-python==0.3.36 --hash=sha256:cccc\ntorch==2.13.0+cpu --hash=sha256:bbbb\n"
    )
    assert locks.normalise(UV_LOCK) == locks.normalise(reordered)
    assert locks.lock_id(locks.normalise(UV_LOCK)) == locks.lock_id(locks.normalise(reordered))
    assert "--hash=sha256:1111 --hash=sha256:2222" in locks.normalise(UV_LOCK)
    other_hash = UV_LOCK.replace("bbbb", "dddd")
    assert locks.lock_id(locks.normalise(other_hash)) != locks.lock_id(locks.normalise(UV_LOCK))


def test_a_wheel_built_here_keeps_no_hash_so_another_machine_locks_alike():
    content = locks.normalise(UV_LOCK, built_here=["llama-cpp-python==0.3.36"])
    assert "llama-cpp-python==0.3.36\n" in content and "cccc" not in content
    rebuilt = UV_LOCK.replace("cccc", "eeee")  # the same release built on another machine
    assert locks.normalise(rebuilt, ["llama-cpp-python==0.3.36"]) == content


def test_pins():
    assert locks.pins(UV_LOCK) == {"torch": "2.13.0+cpu", "jinja2": "3.1.6", "llama-cpp-python": "0.3.36"}


def test_drift_says_what_moved_the_decisive_packages_first():
    old = {"transformers": "5.23.0", "anyio": "4.15.1", "gone": "1.0", "torch": "2.13.0"}
    new = {"transformers": "5.24.0", "anyio": "4.16.0", "triton": "3.9.0", "torch": "2.13.0"}
    changes = locks.drift(old, new)
    assert [str(c) for c in changes] == [
        "anyio 4.15.1 -> 4.16.0",
        "gone 1.0 removed",
        "transformers 5.23.0 -> 5.24.0",
        "triton 3.9.0 added",
    ]
    assert locks.describe_drift(changes, limit=2) == (
        "transformers 5.23.0 -> 5.24.0, triton 3.9.0 added and 2 more"
    )
    assert locks.describe_drift([]) == "no dependency moved"


def test_the_release_cutoff_is_its_first_upload_and_its_own_files_up_to_the_last():
    deps, own = locks.release_cutoff(["2026-11-13T14:10:36Z", "2026-11-13T12:00:00.123Z", None])
    assert (deps, own) == ("2026-11-13T12:00:00Z", "2026-11-13T14:10:37Z")
    with pytest.raises(ValueError, match="no upload times"):
        locks.release_cutoff([])


def test_only_todays_lock_goes_stale():
    assert locks.is_stale(0.0, 25 * 3600, 24.0)
    assert not locks.is_stale(0.0, 23 * 3600, 24.0)


# Against a fake index with upload times (real uv)


@pytest.fixture
def index(tmp_path, monkeypatch):
    with WheelIndex() as idx:
        idx.publish("toydep", "1.0", "2026-10-01T00:00:00Z")
        idx.publish("toyengine", "1.0", RELEASE_DAY, requires=("toydep>=1.0",))
        idx.publish("toydep", "1.1", "2026-11-20T00:00:00Z")
        monkeypatch.setenv("UV_DEFAULT_INDEX", idx.simple_url)
        monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
        monkeypatch.setenv("DAYONE_INDEX_URL", idx.json_url)
        monkeypatch.setenv("DAYONE_FIND_LINKS", "")
        monkeypatch.delenv("DAYONE_EXTRA_INDEX_URL", raising=False)
        monkeypatch.setenv("DAYONE_CACHE", str(tmp_path / "machine-a"))
        yield idx


def _say(_msg: str) -> None:
    pass


def test_release_day_and_today_resolve_to_two_locks(index):
    released = locks.ensure_lock(TOY, "1.0", "release", [], say=_say)
    today = locks.ensure_lock(TOY, "1.0", "today", [], say=_say)
    assert released.packages == {"toyengine": "1.0", "toydep": "1.0"}
    assert today.packages == {"toyengine": "1.0", "toydep": "1.1"}
    assert released.exclude_newer == "2026-11-01T10:00:00Z" and today.exclude_newer is None
    assert released.id != today.id
    assert [str(c) for c in locks.drift(released.packages, today.packages)] == ["toydep 1.0 -> 1.1"]
    # kept: asked again, nothing is resolved
    asked = len(index.requests)
    assert locks.ensure_lock(TOY, "1.0", "release", [], say=_say) == released
    assert len(index.requests) == asked


def test_a_kept_lock_made_for_another_request_is_resolved_again(index):
    """A release lock never goes stale, but the registry asking for one more package (the
    llama.cpp converter's mistral-common) must reach the environment, not wait forever."""
    import dataclasses

    released = locks.ensure_lock(TOY, "1.0", "release", [], say=_say)
    assert released.request == ("toyengine==1.0",)
    wider = dataclasses.replace(TOY, requirements=("toyengine=={version}", "toydep"))
    asked = len(index.requests)
    again = locks.ensure_lock(wider, "1.0", "release", [], say=_say)
    assert len(index.requests) > asked and again.request == ("toyengine==1.0", "toydep")
    asked = len(index.requests)
    assert locks.ensure_lock(wider, "1.0", "release", [], say=_say) == again  # now kept
    assert len(index.requests) == asked


def test_todays_lock_follows_a_new_dependency_release_and_the_release_lock_does_not(index, monkeypatch):
    released = locks.ensure_lock(TOY, "1.0", "release", [], say=_say)
    today = locks.ensure_lock(TOY, "1.0", "today", [], say=_say)
    index.publish("toydep", "1.2", "2026-12-01T00:00:00Z")
    assert locks.ensure_lock(TOY, "1.0", "today", [], say=_say) == today  # still fresh
    monkeypatch.setenv("DAYONE_LOCK_MAX_AGE_H", "0")  # a day later
    moved = locks.ensure_lock(TOY, "1.0", "today", [], say=_say)
    assert moved.packages["toydep"] == "1.2" and moved.id != today.id
    assert locks.ensure_lock(TOY, "1.0", "release", [], say=_say) == released


def test_a_pin_newer_than_the_release_moves_the_cutoff_to_the_day_it_appeared(index):
    """PEFT 0.20.0 with the registry's transformers 5.23.0: before that transformers appeared,
    its own dependencies were not on the index either, and nothing resolves."""
    import dataclasses

    index.publish("toypin", "2.0", "2026-11-25T00:00:00Z", requires=("toydep>=1.1",))
    paired = dataclasses.replace(TOY, requirements=("toyengine=={version}", "toypin==2.0"))
    lock = locks.ensure_lock(paired, "1.0", "release", [], say=_say)
    assert lock.exclude_newer == "2026-11-25T00:00:00Z"
    assert lock.packages == {"toyengine": "1.0", "toypin": "2.0", "toydep": "1.1"}
    assert locks.pairing_cutoff(RELEASE_DAY, ["2026-10-01T00:00:00.5Z", None]) == RELEASE_DAY


def test_a_release_the_index_does_not_have_is_a_clear_error(index):
    with pytest.raises(RuntimeError, match="no release toyengine==9.9"):
        locks.ensure_lock(TOY, "9.9", "release", [], say=_say)


def test_the_environment_id_is_the_locks_and_another_machine_rebuilds_the_same_set(
    index, tmp_path, monkeypatch
):
    a = environments.build_env(TOY, "1.0", _say, resolution="release")
    assert a.lock["id"] == locks.ensure_lock(TOY, "1.0", "release", [], say=_say).id
    assert a.lock["resolution"] == "release" and a.lock["exclude_newer"] == RELEASE_DAY
    assert (Path(a.path) / "lock.txt").read_text().count("--hash=sha256:") == 2
    today = environments.build_env(TOY, "1.0", _say, resolution="today")
    assert today.environment_id != a.environment_id
    assert (a.packages["toydep"], today.packages["toydep"]) == ("1.0", "1.1")

    # Another machine: an empty cache, the lock carried over (as stored with its results).
    lock = locks.read_lock(locks.lock_path(TOY, "1.0", "release"))
    monkeypatch.setenv("DAYONE_CACHE", str(tmp_path / "machine-b"))
    index.publish("toydep", "1.3", "2026-12-02T00:00:00Z")  # the index moved on meanwhile
    b = environments.build_from_lock(TOY, lock, [], _say)
    assert b.environment_id == a.environment_id and b.path != a.path
    assert b.packages == a.packages


def test_two_resolutions_that_lock_alike_are_one_environment(index):
    index.files[:] = [f for f in index.files if f.version != "1.1"]  # nothing newer since
    released = environments.build_env(TOY, "1.0", _say, resolution="release")
    today = environments.build_env(TOY, "1.0", _say, resolution="today")
    assert today.environment_id == released.environment_id
    assert today.lock["resolutions"] == ["release", "today"]


def test_the_image_installs_the_same_lock_in_two_files():
    from matrix.docker_executor import lock_files

    content = locks.normalise(UV_LOCK, ["llama-cpp-python==0.3.36"])
    files = lock_files(content)
    assert files["built.txt"] == "llama-cpp-python==0.3.36\n"
    assert "torch==2.13.0+cpu --hash=sha256:bbbb" in files["locked.txt"]
    assert "llama" not in files["locked.txt"]


# Stored, compared, shown


def _record(env_id, status, resolution, packages, at, lock_id):
    r = {
        "schema_version": 1,
        "run_id": "night-1",
        "model": {"id": "org/m", "revision": "abc", "model_type": "qwen3_5"},
        "engine": {
            "name": "vllm",
            "version": "0.27.1",
            "hardware": "cpu",
            "environment_id": env_id,
            "resolved_packages": packages,
            "lock": {
                "id": lock_id,
                "resolution": resolution,
                "resolutions": [resolution],
                "exclude_newer": None,
            },
        },
        "tier": "arch",
        "stage": "load",
        "status": status,
        "failure_class": None,
        "message": None,
        "metrics": {},
        "started_at": at,
        "duration_s": 1.0,
        "reproduce": "python -c 'import vllm'",
        "dayone_version": "0.1.0",
        "host": "box",
    }
    if status != "pass":
        r["failure_class"] = "kernel_or_dtype"
        r["message"] = "chunk_gated_delta_rule_cpu: initial_state dtype mismatch"
    return r


def _stored(tmp_path, records):
    from matrix.ingest import ingest_records
    from matrix.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    with store.writing() as s:
        report = ingest_records(s, records)
    assert not report.rejected, report.rejected
    return store


def test_a_release_that_passes_as_released_and_fails_as_installed_today(tmp_path):
    from service import feed, views

    store = _stored(
        tmp_path,
        [
            _record(
                "vllm-0.27.1-rel",
                "pass",
                "release",
                {"transformers": "5.23.0", "torch": "2.13.0"},
                "2026-12-02T01:00:00Z",
                "aaa",
            ),
            _record(
                "vllm-0.27.1-now",
                "fail",
                "today",
                {"transformers": "5.24.0", "torch": "2.13.0", "triton": "3.9.0"},
                "2026-12-02T01:10:00Z",
                "bbb",
            ),
        ],
    )
    with store.session() as s:
        drifts = views.engine_drift(s, "vllm")
        assert [d.headline() for d in drifts] == [
            "org/m in vllm 0.27.1: pass as released; load kernel_or_dtype as installed today "
            "(transformers 5.23.0 -> 5.24.0, triton 3.9.0 added)"
        ]
        assert drifts[0].regression
        page = views.engine_view(s, "vllm")
        assert {tuple(e["resolutions"]) for e in page["environments"]} == {("release",), ("today",)}
        assert {e["lock_id"] for e in page["environments"]} == {"aaa", "bbb"}
        assert page["drift"][0]["changes"] == ["transformers 5.23.0 -> 5.24.0", "triton 3.9.0 added"]
        data = feed.feed_view(s, now=dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc))
        cell = views.cell_view(s, "org/m", "vllm")
    store.close()
    assert [d["changes"] for d in cell["drift"]] == [page["drift"][0]["changes"]]
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.links import cell_path, engine_path, release_path

    with TestClient(create_app(f"sqlite:///{tmp_path / 'd.db'}")) as client:
        for url in (
            "/" + engine_path("vllm"),
            "/" + release_path("vllm", "0.27.1"),
            "/" + cell_path("org/m", "vllm"),
        ):
            html = client.get(url).text
            assert "Dependency drift" in html and "triton 3.9.0 added" in html, url
    kinds = [(e["kind"], e["title"]) for e in data["entries"] if e["kind"] != "new_green"]
    assert kinds == [
        (
            "dependency_drift",
            "Dependency drift: org/m in vllm 0.27.1: pass → fail, the engine unchanged "
            "(transformers 5.23.0 -> 5.24.0, triton 3.9.0 added)",
        )
    ]


def test_one_environment_for_both_resolutions_stores_both_labels(tmp_path):
    from matrix.queries import engine_environments

    r = _record("vllm-0.27.1-one", "pass", "release", {}, "2026-12-02T01:00:00Z", "ccc")
    r["engine"]["lock"]["resolutions"] = ["release", "today"]
    later = _record("vllm-0.27.1-one", "pass", "today", {}, "2026-12-03T01:00:00Z", "ccc")
    store = _stored(tmp_path, [r, later])
    with store.session() as s:
        (env,) = engine_environments(s, "vllm")
    store.close()
    assert env.resolutions == {"release", "today"} and env.lock_id == "ccc"


def test_a_lock_id_longer_than_the_store_keeps_is_refused(tmp_path):
    from matrix.ingest import ingest_records
    from matrix.store import open_store

    r = _record("e", "pass", "today", {}, "2026-12-02T01:00:00Z", "x" * 65)
    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    with store.writing() as s:
        report = ingest_records(s, [r])
    store.close()
    assert report.rejected and "engine.lock.id" in report.rejected[0][1]


def test_drift_needs_two_environments_and_two_verdicts():
    t = dt.datetime(2026, 12, 2, tzinfo=dt.timezone.utc)
    obs = [
        S.Observation(
            model="m",
            engine="vllm",
            engine_version="1",
            stage="load",
            status="pass",
            started_at=t,
            environment_id="one",
        )
    ]
    env = release_diff.LockedEnvironment("one", frozenset({"release", "today"}), {}, t)
    assert release_diff.dependency_drift("vllm", obs, [env]) == []


def test_the_cli_prints_both_locks_and_what_moved(index, tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    # The toy engine is not in the registry: the CLI's own check names what it knows.
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "env", "lock", "nosuch"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    assert proc.returncode == 2 and "unknown engine" in (proc.stderr + proc.stdout).lower()
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "env", "lock", "vllm", "--resolution", "yesterday"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
    )
    assert proc.returncode == 2 and "--resolution must be" in proc.stderr + proc.stdout


def test_a_stale_lock_is_kept_when_the_index_is_away(index, monkeypatch):
    today = locks.ensure_lock(TOY, "1.0", "today", [], say=_say)
    monkeypatch.setenv("DAYONE_LOCK_MAX_AGE_H", "0")
    monkeypatch.setenv("UV_DEFAULT_INDEX", "http://127.0.0.1:9/simple")  # nothing answers
    monkeypatch.setenv("UV_OFFLINE", "1")
    said = []
    assert locks.ensure_lock(TOY, "1.0", "today", [], say=said.append) == today
    assert any("keeping the lock of" in s for s in said)
    with pytest.raises(RuntimeError, match="resolving toyengine"):
        locks.ensure_lock(TOY, "1.0", "today", [], refresh=True, say=_say)
