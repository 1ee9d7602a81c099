"""matrix.summary: pure functions over hand-built results (no store, no engines)."""

from __future__ import annotations

import datetime as dt

import pytest

from matrix import summary as S

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2025, 3, 1, 2, 0, tzinfo=dt.timezone.utc)


def rec(
    status: str = "pass",
    *,
    stage: str = "load",
    model: str = "m",
    engine: str = "tf",
    version: str = "1.0",
    night: int = 0,
    minute: int = 0,
    run: str | None = "auto",
    env: str | None = None,
    release: str | None = None,
) -> dict:
    """A contract record; `night` N starts at T0 + N days, one run per (night, version)."""
    started = T0 + night * DAY + dt.timedelta(minutes=minute)
    model_part = {"id": model, **({"release_date": release} if release else {})}
    return {
        "schema_version": 1,
        "model": model_part,
        "engine": {"name": engine, "version": version, "environment_id": env or f"{engine}-{version}"},
        "stage": stage,
        "status": status,
        "failure_class": None,
        "started_at": started.isoformat().replace("+00:00", "Z"),
        "duration_s": 1.0,
        "run_id": f"night{night}-{version}" if run == "auto" else run,
    }


def probe(status_by_stage: dict[str, str], **kw) -> list[dict]:
    return [
        rec(status, stage=stage, minute=i, **kw) for i, (stage, status) in enumerate(status_by_stage.items())
    ]


# The status order


@pytest.mark.parametrize(
    "statuses, worst",
    [
        (["pass", "fail"], "fail"),
        (["pass", "degraded"], "degraded"),
        (["degraded", "oom"], "oom"),
        (["oom", "timeout"], "timeout"),
        (["timeout", "fail"], "fail"),
        (["pass", "error"], "pass"),  # ours, not the engine's: never outweighs a verdict
        (["pass", "skipped"], "pass"),
        (["error", "skipped"], "error"),  # nothing meaningful: say it was ours
        (["skipped"], "skipped"),
        ([], None),
    ],
)
def test_worst_status_is_the_worst_meaningful(statuses, worst):
    assert S.worst_status(statuses) == worst


def test_every_contract_status_has_a_place_in_the_order():
    from probes.stages import STATUSES

    assert sorted(S.MEANINGFUL + S.FALLBACK) == sorted(STATUSES)


def test_versions_order_by_packaging_not_by_text():
    versions = ["4.10.0", "4.9.1", "5.0.0", "5.0.0.dev0", "b4567", "5.0.0rc1", "0.8.5+cpu"]
    assert sorted(versions, key=S.version_key) == [
        "b4567",
        "0.8.5+cpu",
        "4.9.1",
        "4.10.0",
        "5.0.0.dev0",
        "5.0.0rc1",
        "5.0.0",
    ]


def test_observe_reads_a_record_in_utc():
    o = S.observe({**rec(release="2025-02-20"), "started_at": "2025-03-01T04:00:00+02:00"})
    assert o.started_at == T0 and o.started_at.tzinfo is not None
    assert (o.model, o.engine, o.engine_version, o.stage) == ("m", "tf", "1.0", "load")
    assert o.release_date == dt.date(2025, 2, 20)
    assert S.observe(o) is o


def test_environment_id_is_the_records_or_a_stable_hash():
    engine = {"name": "tf", "version": "1.0", "hardware": "cpu", "packages": {"torch": "2"}}
    assert S.environment_id({**engine, "environment_id": "env-x"}) == "env-x"
    assert S.environment_id(engine) == S.environment_id(dict(reversed(engine.items())))
    assert S.environment_id(engine) != S.environment_id({**engine, "packages": {"torch": "3"}})


# Current state


def test_latest_status_takes_the_newest_version_then_the_latest_time():
    results = [
        rec("fail", version="2.0", night=0),
        rec("pass", version="2.0", night=1),  # same version, later night: this one
        rec("fail", version="1.0", night=5),  # an old version backfilled later: ignored
        rec("pass", version="10.0.0.dev0", engine="other"),
        rec("fail", version="9.0", engine="other", night=3),
    ]
    assert S.latest_status(results) == {("m", "tf", "load"): "pass", ("m", "other", "load"): "pass"}


def test_cell_status_is_the_worst_meaningful_stage():
    results = (
        probe({"load": "pass", "generate": "degraded"}, model="a")
        + probe({"load": "pass", "generate": "error"}, model="b")
        + probe({"load": "fail", "generate": "skipped"}, model="c")
        + probe({"load": "error", "generate": "skipped"}, model="d")
        + probe({"load": "pass", "generate": "timeout"}, model="e")
    )
    assert S.cell_status(results) == {
        ("a", "tf"): "degraded",
        ("b", "tf"): "pass",
        ("c", "tf"): "fail",
        ("d", "tf"): "error",
        ("e", "tf"): "timeout",
    }


def test_a_cells_stages_come_from_one_version():
    # The newest version runs fewer stages; the older version's extra stage must not leak in.
    results = probe({"load": "pass", "parity": "fail"}, version="1.0", night=2) + probe(
        {"load": "pass"}, version="2.0", night=0
    )
    assert S.latest_status(results) == {("m", "tf", "load"): "pass"}
    assert S.cell_status(results) == {("m", "tf"): "pass"}


# Probes


def test_probes_group_by_run_id():
    results = probe({"load": "pass", "generate": "fail"}, night=0) + probe({"load": "pass"}, night=1)
    ps = sorted(S.probes(results), key=lambda p: p.started_at)
    assert [p.stages for p in ps] == [{"load": "pass", "generate": "fail"}, {"load": "pass"}]
    assert [p.status for p in ps] == ["fail", "pass"]
    assert ps[0].broken_stages == ["generate"]


def test_probes_without_run_id_split_on_a_repeated_stage_or_a_gap():
    results = [
        rec("pass", stage="load", minute=0, run=None),
        rec("fail", stage="generate", minute=1, run=None),
        rec("pass", stage="load", minute=2, run=None),  # load again: a new probe
        rec("pass", stage="generate", minute=3 + 120, run=None),
    ]  # 2 h later: new probe
    ps = sorted(S.probes(results), key=lambda p: p.started_at)
    assert [p.stages for p in ps] == [
        {"load": "pass", "generate": "fail"},
        {"load": "pass"},
        {"generate": "pass"},
    ]


# The version axis


def test_supported_since_is_the_first_green_version_in_packaging_order():
    results = (
        probe({"load": "fail"}, version="4.49.0")
        + probe({"load": "pass", "generate": "fail"}, version="4.50.0")  # not green
        + probe({"load": "pass", "generate": "pass"}, version="4.51.3")
        + probe({"load": "pass", "generate": "pass"}, version="4.100.0")
        + probe({"load": "pass", "generate": "pass"}, version="5.0.0")
    )
    assert S.supported_since(results) == {("m", "tf"): "4.51.3"}


def test_supported_since_uses_each_versions_latest_verdict():
    results = [
        rec("pass", version="1.0", night=0),
        rec("fail", version="1.0", night=1),
        rec("fail", version="2.0", night=0),
        rec("pass", version="2.0", night=1),
        rec("fail", model="never"),
    ]
    assert S.supported_since(results) == {("m", "tf"): "2.0", ("never", "tf"): None}


def test_degraded_is_not_green():
    assert S.supported_since([rec("degraded")]) == {("m", "tf"): None}


def test_days_to_green_counts_from_release_to_the_first_green_probe():
    results = [
        rec("fail", night=0, release="2025-02-25"),
        rec("pass", night=3),  # 2025-03-04: 7 days after release
        rec("pass", night=9),
        rec("pass", model="no-date"),
        rec("fail", model="red", release="2025-02-01"),
    ]
    assert S.days_to_green(results) == {("m", "tf"): 7, ("no-date", "tf"): None, ("red", "tf"): None}


def test_days_to_green_takes_the_earliest_green_of_any_version():
    results = [rec("pass", version="2.0", night=4, release="2025-03-01"), rec("pass", version="1.0", night=2)]
    assert S.days_to_green(results) == {("m", "tf"): 2}


# Time series


def test_failing_since_and_last_pass():
    results = [
        rec("pass", night=0),
        rec("pass", night=1),
        rec("fail", night=2),
        rec("error", night=3),  # ours: neither breaks nor extends the streak
        rec("timeout", night=4),
    ]
    streak = S.failing_since(results)[("m", "tf")]
    assert streak.last_pass.started_at == T0 + 1 * DAY
    assert streak.failing_since.started_at == T0 + 2 * DAY


def test_not_failing_now_has_no_failing_since():
    streak = S.failing_since([rec("fail", night=0), rec("pass", night=1)])[("m", "tf")]
    assert streak.failing_since is None and streak.last_pass.started_at == T0 + DAY
    never = S.failing_since([rec("fail", night=0)])[("m", "tf")]
    assert never.last_pass is None and never.failing_since.started_at == T0


def test_failing_since_follows_versions_before_nights():
    results = [
        rec("pass", version="1.0", night=0),
        rec("fail", version="2.0", night=1),
        rec("fail", version="0.9", night=5),
    ]  # backfill of an old version: earlier
    streak = S.failing_since(results)[("m", "tf")]
    assert streak.failing_since.engine_version == "2.0"
    assert streak.last_pass.engine_version == "1.0"


def test_regressions_between_nights_and_between_versions():
    results = [
        rec("pass", version="1.0", night=0),
        rec("fail", version="1.0", night=1),  # night
        rec("pass", version="1.1", night=2),
        rec("oom", version="1.2", night=3),  # version
        rec("fail", version="1.3", night=4),
    ]  # still red
    found = [
        (r.before.engine_version, r.after.engine_version, r.across_versions) for r in S.regressions(results)
    ]
    assert found == [("1.0", "1.0", False), ("1.1", "1.2", True)]


def test_no_regression_from_fixes_errors_or_backfills():
    results = [
        rec("fail", night=0),
        rec("pass", night=1),  # a fix
        rec("error", night=2),
        rec("pass", night=3),  # ours, in between
        rec("fail", version="0.1", night=4),
    ]  # an old version run later
    assert S.regressions(results) == []
    # pass -> error -> fail is one regression (the error is skipped over)
    results = [rec("pass", night=0), rec("error", night=1), rec("fail", night=2)]
    assert [(r.before.started_at, r.after.started_at) for r in S.regressions(results)] == [(T0, T0 + 2 * DAY)]


def test_degraded_to_fail_is_a_regression():
    assert len(S.regressions([rec("degraded", night=0), rec("fail", night=1)])) == 1


def test_flakiness_counts_flips_in_one_environment():
    results = [rec(s, night=i) for i, s in enumerate(["pass", "fail", "pass", "error", "pass"])]
    f = S.flakiness(results)[("m", "tf", "tf-1.0", "load")]
    assert f.statuses == ("pass", "fail", "pass", "pass") and f.flips == 2 and f.flaky


def test_flakiness_looks_at_the_last_n_only():
    results = [rec(s, night=i) for i, s in enumerate(["fail", "pass", "pass", "pass"])]
    assert S.flakiness(results, last_n=3)[("m", "tf", "tf-1.0", "load")].flips == 0
    assert S.flakiness(results, last_n=4)[("m", "tf", "tf-1.0", "load")].flips == 1


def test_flakiness_does_not_mix_environments():
    results = [
        rec("pass", night=0, env="cpu"),
        rec("fail", night=1, env="gpu"),
        rec("pass", night=2, env="cpu"),
        rec("fail", night=3, env="gpu"),
    ]
    flaky = S.flakiness(results)
    assert {k[2]: f.flips for k, f in flaky.items()} == {"cpu": 0, "gpu": 0}


def test_degraded_and_pass_alternating_is_not_flaky():
    results = [rec(s, night=i) for i, s in enumerate(["pass", "degraded", "pass"])]
    assert S.flakiness(results)[("m", "tf", "tf-1.0", "load")].flips == 0


def test_staleness():
    results = [rec("pass", night=0), rec("error", night=3), rec("pass", model="old", night=0)]
    now = T0 + 4 * DAY
    st = S.staleness(results, now, max_age=2 * DAY)
    assert st[("m", "tf")].last_seen == T0 + 3 * DAY and not st[("m", "tf")].stale
    assert st[("old", "tf")].stale and st[("old", "tf")].age == 4 * DAY


# One row per cell


def test_summarize_puts_it_together():
    results = [
        rec("fail", version="4.49.0", night=0, release="2025-02-27"),
        rec("pass", version="4.51.3", night=1),
        rec("fail", version="4.51.3", night=2),
        rec("pass", version="4.51.3", night=3),
        rec("fail", version="5.0.0", night=4),
        rec("pass", model="z", engine="llama.cpp", version="0.3.9", night=0),
    ]
    rows = S.summarize(results, now=T0 + 5 * DAY)
    assert [(r.model, r.engine) for r in rows] == [("m", "tf"), ("z", "llama.cpp")]
    m, z = rows
    assert (m.status, m.engine_version, m.supported_since, m.days_to_green) == (
        "fail",
        "5.0.0",
        "4.51.3",
        3,
    )  # release 02-27, first green 03-02
    assert m.failing_since.engine_version == "5.0.0"
    assert m.last_pass.started_at == T0 + 3 * DAY
    assert m.regressions == 2 and m.flaky_stages == ("load",) and not m.stale
    assert z.stale and z.status == "pass" and z.days_to_green is None
    d = m.as_dict()
    assert d["failing_since"] == {"engine_version": "5.0.0", "started_at": (T0 + 4 * DAY).isoformat()}
    table = S.summary_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["model", "engine", "status"]
    assert "4.51.3" in lines[1] and "5.0.0 (2025-03-05)" in lines[1]
    assert lines[2].startswith("z ") and "yes (last 2025-03-01)" in lines[2]


def test_summaries_of_nothing_are_empty():
    assert S.summarize([], now=T0) == []
    assert S.summary_table([]).split() == list(" ".join(S.SUMMARY_COLUMNS).split())
