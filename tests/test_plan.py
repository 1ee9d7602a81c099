"""Planning is pure: models x environments x stages minus what has a result."""

from __future__ import annotations

from dataclasses import dataclass

from matrix.plan import DoneIndex, EnvironmentTarget, plan, summarize

TF = EnvironmentTarget("env-tf", "transformers", "5.23.0", ("load", "generate", "parity"))
VLLM = EnvironmentTarget("env-vllm", "vllm", "0.32.0", ("load", "generate", "serve"), heavy=True)


@dataclass(frozen=True)
class M:
    id: str
    revision: str | None
    model_dir: str | None = None
    skip_reason: str | None = None


def test_nothing_known_plans_every_cell_with_all_stages():
    tasks = plan([M("a", "s1"), M("b", "s2")], [TF, VLLM], DoneIndex())
    assert [(t.model_id, t.environment_id, t.stages) for t in tasks] == [
        ("a", "env-tf", TF.stages),
        ("a", "env-vllm", VLLM.stages),
        ("b", "env-tf", TF.stages),
        ("b", "env-vllm", VLLM.stages),
    ]
    assert tasks[1].heavy and not tasks[0].heavy
    assert summarize(tasks) == {"tasks": 4, "stages": 12, "models": 2, "environments": 2, "skipped": 0}


def test_full_history_plans_nothing():
    models = [M("a", "s1"), M("b", "s2")]
    rows = [
        (m.id, m.revision, env.environment_id, stage, "fail")
        for m in models
        for env in (TF, VLLM)
        for stage in env.stages
    ]
    assert plan(models, [TF, VLLM], DoneIndex.from_rows(rows)) == []


def test_a_new_sha_is_new_work_and_an_old_one_is_not():
    rows = [("a", "s1", "env-tf", s) for s in TF.stages]
    tasks = plan([M("a", "s1"), M("a", "s2")], [TF], DoneIndex.from_rows(rows))
    assert [(t.model_id, t.revision) for t in tasks] == [("a", "s2")]


def test_only_missing_stages_are_planned():
    rows = [("a", "s1", "env-tf", "load", "pass")]
    (task,) = plan([M("a", "s1")], [TF], DoneIndex.from_rows(rows))
    assert task.stages == ("generate", "parity")


def test_new_environment_plans_old_models_there():
    rows = [("a", "s1", "env-tf", s, "pass") for s in TF.stages]
    tasks = plan([M("a", "s1")], [TF, VLLM], DoneIndex.from_rows(rows))
    assert [t.environment_id for t in tasks] == ["env-vllm"]


def test_errors_are_retried_a_bounded_number_of_times():
    once = [("a", "s1", "env-tf", "load", "error")]
    (task,) = plan([M("a", "s1")], [TF], DoneIndex.from_rows(once))
    assert task.stages == TF.stages  # our error: try again
    twice = once * 2 + [("a", "s1", "env-tf", s, "skipped") for s in ("generate", "parity")]
    assert plan([M("a", "s1")], [TF], DoneIndex.from_rows(twice)) == []
    # an error then a real verdict: done
    healed = once + [("a", "s1", "env-tf", "load", "pass")]
    assert plan([M("a", "s1")], [TF], DoneIndex.from_rows(healed))[0].stages == ("generate", "parity")


def test_skipped_models_and_duplicates():
    models = [M("gated", "s9", skip_reason="gated: no access"), M("gated", "s9"), M("x", None)]
    tasks = plan(models, [TF], DoneIndex())
    assert [(t.model_id, t.revision, t.skip_reason) for t in tasks] == [
        ("gated", "s9", "gated: no access"),
        ("x", "", None),
    ]
    # a model without a revision is done once a result has revision ""
    done = DoneIndex.from_rows([("x", None, "env-tf", s) for s in TF.stages])
    assert [t.model_id for t in plan([M("x", None)], [TF], done)] == []
