"""The store: migrations from empty, defaults, queries; on SQLite files and a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from matrix.ingest import ingest_records
from matrix.migrations import current_revision, head_revision
from matrix.queries import results
from matrix.store import Base, Result, default_url, open_store

TABLES = {"model_revisions", "environments", "runs", "results", "cell_latest", "alembic_version"}


def rec(
    model: str = "tiny/llama",
    engine: str = "transformers",
    version: str = "5.0.0",
    stage: str = "load",
    status: str = "pass",
    at: str = "2025-03-01T02:00:00Z",
    run: str | None = "night-1",
    **kw,
) -> dict:
    r = {
        "schema_version": 1,
        "run_id": run,
        "model": {"id": model},
        "engine": {"name": engine, "version": version, "hardware": "cpu"},
        "stage": stage,
        "status": status,
        "failure_class": None if status == "pass" else "crash",
        "started_at": at,
        "duration_s": 1.0,
    }
    r.update(kw)
    return r


# PostgreSQL: a throwaway server from the Debian package, or a loud skip


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return shutil.which(name) or (found[-1] if found else None)


@pytest.fixture(scope="module")
def postgres_server():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL NOT TESTED: initdb/pg_ctl not found (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL NOT TESTED: the psycopg driver is not installed")
    base = Path(tempfile.mkdtemp(prefix="dayone-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    try:
        subprocess.run(
            [*as_user, initdb, "-D", data, "-A", "trust", "-U", "dayone", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            [
                *as_user,
                pg_ctl,
                "-D",
                data,
                "-w",
                "-l",
                base / "log",
                "-o",
                f"-k {base} -c listen_addresses='' -F",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (subprocess.SubprocessError, OSError) as err:
        said = getattr(err, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL NOT TESTED: the server did not start: {err} {said[-500:]!r}")
    try:
        yield f"postgresql+psycopg://dayone@/postgres?host={base}"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=60
        )
        shutil.rmtree(base, ignore_errors=True)


def _fresh_pg_database(server_url: str) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return server_url.replace("@/postgres?", f"@/{name}?")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dayone.db'}"
    return _fresh_pg_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def store(url):
    s = open_store(url)
    yield s
    s.close()


# Migrations


def test_migrations_build_the_whole_schema_from_empty(url):
    store = open_store(url)
    names = set(inspect(store.engine).get_table_names())
    assert TABLES <= names
    assert current_revision(store.engine) == head_revision() is not None
    # The migrations and the typed tables describe the same schema.
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    open_store(url).close()  # opening again is a no-op, not an error
    store.close()


def test_sqlite_store_is_wal_with_foreign_keys(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'x.db'}")  # makes the dir
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with pytest.raises(IntegrityError), store.writing() as s:
        s.add(
            Result(
                model_revision_pk=99,
                environment_pk=99,
                stage="load",
                status="pass",
                started_at=dt.datetime(2025, 1, 1),
                duration_s=1.0,
                raw={},
            )
        )
        s.flush()


def test_default_path_and_environment_variables(tmp_path, monkeypatch):
    monkeypatch.delenv("DAYONE_DB", raising=False)
    monkeypatch.delenv("DAYONE_HOME", raising=False)
    assert default_url() == f"sqlite:///{Path.home() / '.dayone' / 'dayone.db'}"
    monkeypatch.setenv("DAYONE_HOME", "")  # set but empty (a blank compose variable): default
    assert default_url() == f"sqlite:///{Path.home() / '.dayone' / 'dayone.db'}"
    from matrix import probing

    assert probing.dayone_home() == Path.home() / ".dayone"  # the logs follow the same rule
    monkeypatch.setenv("DAYONE_HOME", str(tmp_path / "home"))
    assert default_url() == f"sqlite:///{tmp_path / 'home' / 'dayone.db'}"
    open_store().close()
    assert (tmp_path / "home" / "dayone.db").is_file()
    monkeypatch.setenv("DAYONE_DB", f"sqlite:///{tmp_path / 'other.db'}")
    open_store().close()
    assert (tmp_path / "other.db").is_file()


def test_in_memory_sqlite_works_for_quick_use():
    store = open_store("sqlite://")
    with store.writing() as s:
        assert ingest_records(s, [rec()]).inserted == 1
    with store.session() as s:
        assert len(results(s)) == 1


# Ingest and queries, on both backends


def test_ingest_is_idempotent_and_round_trips(store):
    records = [
        rec(),
        rec(
            stage="generate",
            at="2025-03-01T02:00:01Z",
            output={"logprobs": [-0.25, -1.5]},
            log_excerpt="nul\x00here",
            message="lone \ud800 surrogate",
        ),
    ]
    for expected_new in (2, 0):
        with store.writing() as s:
            report = ingest_records(s, records + [{"schema_version": 1}])
        assert report.inserted == expected_new and len(report.rejected) == 1
    with store.session() as s:
        got = results(s)
    assert got[0]["output"] == {"logprobs": [-0.25, -1.5]}
    assert got[0]["log_excerpt"] == "nul\ufffdhere"
    assert got[0]["message"] == "lone ? surrogate"
    assert got[1] == records[0]


@pytest.fixture
def filled(store):
    records = [
        rec(model="old", at="2025-01-10T00:00:00Z"),
        rec(model="old", engine="llama.cpp", version="0.3.9", at="2025-01-11T00:00:00Z", status="fail"),
        rec(model="new", at="2025-03-01T00:00:00Z", stage="load"),
        rec(model="new", at="2025-03-01T00:00:05Z", stage="generate", status="fail"),
        rec(model="new", at="2025-03-02T00:00:00Z", stage="generate", run="night-2"),
        rec(
            model="new",
            version="4.51.3",
            at="2025-03-05T00:00:00Z",
            stage="generate",
            status="fail",
            run="backfill",
        ),
    ]
    records[2]["model"] = {"id": "new", "release_date": "2025-02-28", "family": "llama"}
    records[0]["model"] = {"id": "old", "release_date": "2024-12-01", "family": "qwen"}
    with store.writing() as s:
        assert ingest_records(s, records).inserted == len(records)
    return store, records


def test_results_filters_and_newest_first(filled):
    store, records = filled
    with store.session() as s:
        everything = results(s)
        assert [r["started_at"] for r in everything] == sorted(
            (r["started_at"] for r in records), reverse=True
        )
        assert {r["model"]["id"] for r in results(s, model="old")} == {"old"}
        assert {r["engine"]["name"] for r in results(s, engine="llama.cpp")} == {"llama.cpp"}
        assert [r["run_id"] for r in results(s, engine="transformers==4.51.3")] == ["backfill"]
        assert {r["stage"] for r in results(s, stage="generate")} == {"generate"}
        assert len(results(s, since="2025-03-01T00:00:01Z")) == 3
        assert len(results(s, since=dt.date(2025, 3, 1))) == 4
        assert (
            len(results(s, since=dt.datetime(2025, 3, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2))))) == 4
        )  # 2025-02-28T23:00Z
        assert results(s, limit=2) == everything[:2]
        assert results(s, limit=2, offset=1) == everything[1:3]
        assert [r["status"] for r in results(s, status="fail")] == ["fail"] * 3
        assert results(s, model="nobody") == []


def test_an_empty_store_has_no_results(store):
    with store.session() as s:
        assert results(s) == []


def test_cache_follows_the_same_rule(tmp_path, monkeypatch):
    from matrix import environments
    from probes import gguf_convert, tools

    monkeypatch.setenv("DAYONE_CACHE", "")  # set but empty: the default, not the working folder
    default = Path.home() / ".cache" / "dayone"
    assert tools.cache_dir() == environments.cache_dir() == gguf_convert.cache_dir() == default
    assert environments.envs_dir() == default / "envs"
    monkeypatch.setenv("DAYONE_CACHE", str(tmp_path / "c"))
    assert environments.envs_dir() == tmp_path / "c" / "envs"
