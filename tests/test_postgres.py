"""The store and the API against a real PostgreSQL server (Debian's package), started in a
temporary folder on a loopback port and stopped by the tests.

initdb refuses to run as root, so as root the server runs as the `postgres` user (runuser).
Skipped, loudly and with the reason, only where no server can be started."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from matrix.ingest import ingest_records
from matrix.store import CellLatest, Result, open_store
from service.app import create_app

import test_service_api as api_tests
from test_service_api import TOKEN, history, probe
from conftest import filled_store

psycopg = pytest.importorskip(
    "psycopg", reason="*** POSTGRES TESTS SKIPPED: pip install 'psycopg[binary]' ***"
)


def _skip(reason: str):
    pytest.skip(f"\n\n*** POSTGRES TESTS SKIPPED: {reason} ***\n")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """initdb + pg_ctl in a temporary folder, as `postgres` when we are root."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            _skip("initdb/pg_ctl not found: `apt-get install -y postgresql`")
        self.root = Path(tempfile.mkdtemp(prefix="dayone-pg-", dir="/tmp"))
        self.data, self.port = self.root / "data", _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                _skip("running as root and no runuser to drop to the postgres user")
            try:
                shutil.chown(self.root, "postgres", "postgres")
            except (LookupError, PermissionError) as exc:
                _skip(f"running as root and cannot hand the data folder to `postgres`: {exc}")
            self.as_user = [runuser, "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=120)

    def start(self) -> str:
        init = self._run(
            self.initdb,
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        )
        if init.returncode:
            _skip(f"initdb failed: {init.stderr.strip()[-500:]}")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        started = self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "-l",
            str(self.root / "server.log"),
            "start",
        )
        if started.returncode:
            log = self.root / "server.log"
            tail = log.read_text()[-800:] if log.exists() else started.stderr
            self.cleanup()
            _skip(f"pg_ctl start failed: {tail.strip()}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server():
    server = Server()
    base = server.start()
    yield base
    server.stop()


_names = (f"dayone_{i}" for i in itertools.count())


def new_database(base: str) -> str:
    name = next(_names)
    with psycopg.connect(
        base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True
    ) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{base}/{name}"


# The store on PostgreSQL


def test_ingest_is_idempotent_and_keeps_cell_latest(pg_server):
    store = open_store(new_database(pg_server))
    try:
        with store.writing() as s:
            first = ingest_records(s, history())
        with store.writing() as s:
            again = ingest_records(s, history() + [{"schema_version": 1}])
        assert (first.inserted, first.duplicates) == (len(history()), 0)
        assert (again.inserted, again.duplicates, len(again.rejected)) == (0, len(history()), 1)
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(Result)) == len(history())
            # 4 cells x 3 stages, plus alpha/vllm's old environment (0.8.0): 15 rows
            assert s.scalar(select(func.count()).select_from(CellLatest)) == 15
    finally:
        store.close()


def test_nul_and_long_text_from_untrusted_logs(pg_server):
    store = open_store(new_database(pg_server))
    try:
        r = probe(
            "m/nul",
            "vllm",
            "1",
            0,
            ("fail", "skipped", "skipped"),
            message="bad\x00byte",
            log_excerpt="x" * 200_000,
        )
        with store.writing() as s:
            assert ingest_records(s, r).inserted == 3
    finally:
        store.close()


# The API on PostgreSQL: the SQLite API tests, run again with these fixtures


@pytest.fixture(scope="module")
def db_url(pg_server) -> str:
    url = new_database(pg_server)
    store = open_store(url)
    with store.writing() as s:
        assert ingest_records(s, history()).rejected == []
    store.close()
    return url


client = api_tests.client  # the same fixture, resolved with this module's db_url


@pytest.fixture
def ingest_client(pg_server):
    with TestClient(create_app(new_database(pg_server), ingest_token=TOKEN, max_body_bytes=200_000)) as c:
        yield c


SHARED = [
    "test_matrix_page_shows_latest_status_per_cell",
    "test_matrix_json_is_the_same_data",
    "test_models_newest_first_grouped_by_family",
    "test_strip_days_to_green_and_tier",
    "test_matrix_filters",
    "test_matrix_pagination",
    "test_model_page_and_twin",
    "test_engine_page_says_what_each_version_fixed",
    "test_cell_page_history_log_and_reproduce",
    "test_xss_payload_in_a_failure_message_is_inert",
    "test_badge_svg",
    "test_feed_has_regressions_and_new_greens",
    "test_results_filter_paginate_since",
    "test_summaries_and_models",
    "test_ingest_without_or_with_a_wrong_token_is_refused",
    "test_ingest_batch_is_idempotent",
    "test_ingest_reports_bad_records_and_keeps_good_ones",
    "test_ingest_bad_bodies_are_4xx_never_5xx",
    "test_nul_in_a_path_or_query_is_a_400",
]
for _name in SHARED:
    globals()[_name] = getattr(api_tests, _name)


def test_healthz_names_postgresql(client):
    assert client.get("/healthz").json() == {"status": "ok", "store": "postgresql"}


def test_odd_model_ids_on_postgresql(pg_server):
    from service.links import slug

    ids = ["a/../../etc/passwd", "space name/€uro", "x.json", "~tilde"]
    url = filled_store(new_database(pg_server), [r for m in ids for r in probe(m, "vllm", "1", 0)])
    with TestClient(create_app(url)) as c:
        for mid in ids:
            assert c.get(f"/cells/{slug(mid)}/vllm.json").json()["model"] == mid
