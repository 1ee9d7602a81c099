"""matrix.ingest into real SQLite files: idempotent, every bad line reported, nothing else lost."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import random
from pathlib import Path

import pytest
from sqlalchemy import func, select

from matrix.ingest import ingest_file, ingest_records, rebuild_cell_latest
from matrix.queries import results
from matrix.store import CellLatest, Environment, ModelRevision, Result, Run, Store, open_store


def rec(**kw) -> dict:
    r = {
        "schema_version": 1,
        "run_id": "night-1",
        "model": {
            "id": "tiny/llama",
            "revision": "abc123",
            "model_type": "llama",
            "architecture": "LlamaForCausalLM",
        },
        "engine": {
            "name": "transformers",
            "version": "4.51.3",
            "hardware": "cpu",
            "packages": {"torch": "2.13.0", "transformers": "4.51.3"},
        },
        "tier": "arch",
        "stage": "load",
        "status": "pass",
        "failure_class": None,
        "message": None,
        "metrics": {"load_s": 0.5},
        "started_at": "2025-03-01T02:00:00Z",
        "duration_s": 0.5,
        "reproduce": "dayone probe tiny/llama --engine transformers",
        "dayone_version": "0.1.0",
        "host": "box",
    }
    r.update(kw)
    return r


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(f"sqlite:///{tmp_path / 'dayone.db'}")
    yield s
    s.close()


def count(store: Store, entity) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(entity))


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_the_same_file_twice_is_stored_once(store, tmp_path):
    records = [
        rec(),
        rec(
            stage="generate",
            started_at="2025-03-01T02:00:01Z",
            output={"token_ids": [1, 2, 3], "logprobs": [-0.1, -0.2, -0.3]},
        ),
        rec(run_id="night-2", started_at="2025-03-02T02:00:00Z"),
    ]
    path = write_lines(tmp_path / "r.jsonl", records)
    with store.writing() as s:
        first = ingest_file(s, path)
    with store.writing() as s:
        second = ingest_file(s, path)
    assert (first.inserted, first.duplicates, first.rejected) == (3, 0, [])
    assert (second.inserted, second.duplicates, second.rejected) == (0, 3, [])
    assert [count(store, e) for e in (Result, ModelRevision, Environment, Run, CellLatest)] == [3, 1, 1, 2, 2]


def test_a_gzipped_file_is_read_as_its_records(store, tmp_path):
    """docs/sweep keeps whole sweeps gzipped: `dayone ingest FILE.jsonl.gz` takes them as is,
    and the same records in plain JSON lines are the same records."""
    import gzip

    records = [rec(), rec(run_id="night-2", started_at="2025-03-02T02:00:00Z")]
    plain = write_lines(tmp_path / "r.jsonl", records)
    packed = tmp_path / "r.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    with store.writing() as s:
        first = ingest_file(s, packed)
    with store.writing() as s:
        second = ingest_file(s, plain)
    assert (first.inserted, first.rejected) == (2, [])
    assert (second.inserted, second.duplicates) == (0, 2)


def test_duplicates_within_one_batch_and_in_other_time_zones(store):
    same_moment = rec(started_at="2025-03-01T04:00:00+02:00")  # = 02:00Z: the same record
    with store.writing() as s:
        report = ingest_records(s, [rec(), rec(), same_moment])
    assert (report.inserted, report.duplicates) == (1, 2)


def test_records_come_back_exactly_as_ingested(store):
    records = [
        rec(),
        rec(
            stage="generate",
            started_at="2025-03-01T02:00:01Z",
            output={"token_ids": [5, 6], "logprobs": [[-0.5]]},
            extra={"x": [1]},
        ),
        rec(stage="parity", started_at="2025-03-01T02:00:02Z", output=None),
    ]
    with store.writing() as s:
        ingest_records(s, records)
    with store.session() as s:
        assert results(s) == list(reversed(records))


def test_bad_lines_are_reported_and_lose_nothing_else(store, tmp_path):
    good = [
        rec(stage="load"),
        rec(stage="generate", started_at="2025-03-01T02:00:01Z"),
        rec(stage="parity", started_at="2025-03-01T02:00:02Z"),
    ]
    path = tmp_path / "mixed.jsonl"
    lines = [
        good[0],
        "{not json",  # 2
        [1, 2],  # 3
        {k: v for k, v in rec().items() if k != "engine"},  # 4
        rec(status="broken"),  # 5
        rec(started_at="yesterday"),  # 6
        good[1],
        rec(schema_version=2),  # 8
        rec(model={"id": "m", "release_date": "soon"}),  # 9
        rec(stage="x" * 65),  # 10
        '{"schema_version": 1, "duration_s": NaN}',  # 11
        "",  # blank: skipped
        rec(duration_s=-1),  # 13
        rec(started_at="0001-01-01T00:00:00+05:00"),  # 14
        good[2],
    ]
    write_lines(path, lines)
    with path.open("ab") as f:
        f.write(b'{"bad utf-8": "\xff"}\n')  # 16
    with store.writing() as s:
        report = ingest_file(s, path)
    assert report.inserted == 3 and report.duplicates == 0
    reasons = dict(report.rejected)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 16]
    expected = {
        2: "not JSON",
        3: "not a JSON object",
        4: "'engine' is a required property",
        5: "status: 'broken' is not one of",
        6: "started_at",
        8: "schema_version",
        9: "model.release_date",
        10: "stage: longer than 64",
        11: "NaN",
        13: "duration_s",
        14: "started_at",
        16: "not JSON",
    }
    for line, words in expected.items():
        assert words in reasons[line], (line, reasons[line])
    assert all(len(why) <= 300 for why in reasons.values())
    with store.session() as s:
        assert {r["stage"] for r in results(s)} == {"load", "generate", "parity"}


def test_ingest_records_reports_positions_from_zero(store):
    with store.writing() as s:
        report = ingest_records(s, [rec(), "text", rec(status=None)])
    assert [at for at, _ in report.rejected] == [1, 2]
    assert report.inserted == 1


def test_nan_inside_a_dict_record_is_refused(store):
    with store.writing() as s:
        report = ingest_records(s, [rec(metrics={"tok_s": float("nan")})])
    assert report.inserted == 0 and "metrics.tok_s" in report.rejected[0][1]


def test_nul_characters_are_replaced_not_fatal(store):
    with store.writing() as s:
        assert ingest_records(s, [rec(log_excerpt="a\x00b")]).inserted == 1
    with store.session() as s:
        assert results(s)[0]["log_excerpt"] == "a\ufffdb"


def test_environment_id_is_the_records_or_a_stable_hash(store):
    no_id = rec()
    reordered = rec(engine=dict(reversed(list(rec()["engine"].items()))), run_id="other")
    named = rec(engine={**rec()["engine"], "environment_id": "env-fixed"}, run_id="third")
    other_torch = rec(engine={**rec()["engine"], "packages": {"torch": "2.12.0"}}, run_id="4th")
    with store.writing() as s:
        assert ingest_records(s, [no_id, reordered, named, other_torch]).inserted == 4
    with store.session() as s:
        envs = s.scalars(select(Environment.environment_id)).all()
    assert len(envs) == 3 and "env-fixed" in envs


def test_model_facts_are_filled_in_by_later_records(store):
    with store.writing() as s:
        ingest_records(s, [rec(model={"id": "m", "revision": "r1"})])
    with store.writing() as s:
        ingest_records(
            s,
            [
                rec(
                    model={
                        "id": "m",
                        "revision": "r1",
                        "release_date": "2025-02-14",
                        "family": "llama",
                        "model_type": "llama",
                    },
                    started_at="2025-03-02T00:00:00Z",
                )
            ],
        )
    with store.session() as s:
        m = s.scalars(select(ModelRevision)).one()
    assert (m.release_date, m.family, m.model_type) == (dt.date(2025, 2, 14), "llama", "llama")


def test_a_run_starts_with_its_earliest_result_and_keeps_its_metadata(store):
    with store.writing() as s:
        ingest_records(
            s,
            [
                rec(stage="generate", started_at="2025-03-01T02:05:00Z"),
                rec(stage="load", started_at="2025-03-01T02:00:00Z"),
            ],
        )
    with store.session() as s:
        run = s.scalars(select(Run)).one()
    assert run.started_at == dt.datetime(2025, 3, 1, 2, 0)
    assert (run.run_id, run.dayone_version, run.host, run.hardware) == ("night-1", "0.1.0", "box", "cpu")


def test_results_without_a_run_are_still_idempotent(store):
    with store.writing() as s:
        assert ingest_records(s, [rec(run_id=None), rec(run_id=None)]).inserted == 1
    with store.writing() as s:
        assert ingest_records(s, [{k: v for k, v in rec().items() if k != "run_id"}]).duplicates == 1


def history(n: int = 60, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        t = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=rnd.randrange(400))
        out.append(
            rec(
                model={"id": rnd.choice(["a", "b"]), "revision": rnd.choice(["r1", "r2"])},
                engine={"name": "transformers", "version": rnd.choice(["4.49.0", "5.0.0"])},
                stage=rnd.choice(["load", "generate"]),
                status=rnd.choice(["pass", "fail", "error"]),
                run_id=f"run-{i % 7}",
                started_at=t.isoformat(),
            )
        )
    return out


def cell_latest_rows(store: Store) -> set[tuple]:
    with store.session() as s:
        return set(
            s.execute(
                select(
                    CellLatest.model_revision_pk,
                    CellLatest.environment_pk,
                    CellLatest.stage,
                    CellLatest.result_pk,
                    CellLatest.status,
                    CellLatest.started_at,
                )
            ).all()
        )


def test_cell_latest_holds_the_newest_result_whatever_the_ingest_order(store):
    records = history()
    random.Random(1).shuffle(records)
    with store.writing() as s:
        for chunk in range(0, len(records), 9):  # several batches, out of time order
            ingest_records(s, records[chunk : chunk + 9])
    incremental = cell_latest_rows(store)
    with store.session() as s:
        newest = {}
        for r in s.scalars(select(Result)):
            key = (r.model_revision_pk, r.environment_pk, r.stage)
            if key not in newest or (r.started_at, r.id) > (newest[key].started_at, newest[key].id):
                newest[key] = r
    assert {(k[0], k[1], k[2], r.id, r.status, r.started_at) for k, r in newest.items()} == incremental
    with store.writing() as s:
        assert rebuild_cell_latest(s) == len(incremental)
    assert cell_latest_rows(store) == incremental


def _ingest_in_child(url: str, records: list[dict], out) -> None:
    store = open_store(url)
    with store.writing() as s:
        report = ingest_records(s, records)
    out.put((report.inserted, report.duplicates, len(report.rejected)))


def test_concurrent_ingests_into_a_new_store_lose_and_double_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    records = history(80, seed=3)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    children = [
        ctx.Process(target=_ingest_in_child, args=(url, records[i::2] + records, out)) for i in range(3)
    ]
    for c in children:
        c.start()
    for c in children:
        c.join(60)
    assert [c.exitcode for c in children] == [0, 0, 0]
    reports = [out.get(timeout=5) for _ in children]
    store = open_store(url)
    unique = {
        (
            r["model"]["id"],
            r["model"]["revision"],
            r["engine"]["version"],
            r["stage"],
            r["started_at"],
            r["run_id"],
        )
        for r in records
    }
    assert count(store, Result) == len(unique)
    assert sum(ins for ins, _, _ in reports) == len(unique)
    assert all(rej == 0 for _, _, rej in reports)
