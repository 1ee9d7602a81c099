"""Shared test fixtures: the transformers environment and the tiny fixture models, built once.

DAYONE_HOME points at a temporary folder for the session (logs, default store); engine
environments stay in the normal cache ($DAYONE_CACHE, default ~/.cache/dayone) so a second run
is fast.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_SCHEMA = ROOT.parent / "shared" / "contracts" / "result.schema.json"
PROJECT_SCHEMA = ROOT / "probes" / "result.schema.json"


def pytest_configure(config):
    if "DAYONE_HOME" not in os.environ or os.environ.get("DAYONE_TEST_KEEP_HOME") != "1":
        import tempfile

        os.environ["DAYONE_HOME"] = tempfile.mkdtemp(prefix="dayone-test-home-")


@pytest.fixture(scope="session")
def result_schema() -> dict:
    return json.loads(PROJECT_SCHEMA.read_text())


@pytest.fixture(scope="session")
def validate_record(result_schema):
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        result_schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )

    def check(record: dict) -> dict:
        errors = sorted(validator.iter_errors(record), key=str)
        assert not errors, f"record not valid against the contract: {errors[0].message}"
        return record

    return check


@pytest.fixture(scope="session")
def tf_env():
    from matrix.environments import ensure_env

    return ensure_env("transformers", say=lambda m: print(m, file=sys.stderr))


@pytest.fixture(scope="session")
def fixtures_dir(tf_env, tmp_path_factory) -> Path:
    """All fixture models, built once per session with the real transformers."""
    return build_fixtures(tf_env, tmp_path_factory.mktemp("fixtures"))


def build_fixtures(tf_env, out: Path, names: tuple[str, ...] | list[str] = ()) -> Path:
    """Build fixture models (all, or `names`) with the real transformers into `out`."""
    proc = subprocess.run(
        [tf_env.python, "-m", "probes.fixtures", str(out), *(["--only", *names] if names else [])],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def run_dayone(
    *args: str,
    timeout: float = 900,
    check: bool = True,
    input: str | None = None,
    home: Path | None = None,
) -> subprocess.CompletedProcess:
    """The dayone CLI of this checkout; `home` is its DAYONE_HOME (else the session's)."""
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        input=input,
        env=None if home is None else {**os.environ, "DAYONE_HOME": str(home)},
    )
    if check:
        assert proc.returncode == 0, f"dayone {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def dayone_at(home: Path, timeout: float) -> Callable[..., subprocess.CompletedProcess]:
    """run_dayone with DAYONE_HOME at `home`, leaving the exit status for the test to judge."""
    return functools.partial(run_dayone, home=home, timeout=timeout, check=False)


def run_in_tree(argv: list, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """`argv` run from this checkout with it on PYTHONPATH (and `env` added); it must exit 0."""
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def json_answer(argv: list, timeout: float, env: dict | None = None):
    """run_in_tree, then the last line it printed, as JSON (libraries may print before it)."""
    return json.loads(run_in_tree(argv, timeout, env).stdout.strip().splitlines()[-1])


def fault_probe(req, log_dir: Path) -> tuple[list[dict], object]:
    """Run `req` and turn its outcome into records, as the fault engine's release "1"."""
    from probes.modelinfo import read_model_info
    from probes.record import build_records
    from probes.runner import run_probe

    outcome = run_probe(req, log_dir)
    records = build_records(
        stages=req.stages,
        outcome=outcome,
        engine="fault",
        engine_version="1",
        model=read_model_info(req.model_dir).as_record(),
    )
    return records, outcome


def filled_store(where: Path | str, records: list) -> str:
    """A real store holding `records`, every one accepted; its URL. `where` is a folder (a
    SQLite file is made in it) or a store URL."""
    from matrix.ingest import ingest_records
    from matrix.store import open_store

    url = where if isinstance(where, str) else f"sqlite:///{Path(where) / 'dayone.db'}"
    store = open_store(url)
    try:
        with store.writing() as s:
            assert ingest_records(s, records).rejected == []
    finally:
        store.close()
    return url


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


class InstalledDayone:
    """dayone installed the way a user installs it: `uv pip install <a copy of the tree>` into
    a fresh uv venv (no pip there, not editable), so its `probes` lives in site-packages."""

    def __init__(self, venv: Path):
        self.venv = venv
        self.python = venv / "bin" / "python"
        self.dayone = venv / "bin" / "dayone"

    def run(
        self, *args: str, timeout: float = 900, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        # Only what a user's shell would have: no PYTHONPATH pointing at the checkout.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
        proc = subprocess.run(
            [str(self.dayone), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd or self.venv,
        )
        if check:
            assert proc.returncode == 0, (
                f"dayone {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
        return proc


@pytest.fixture(scope="session")
def installed_dayone(tmp_path_factory) -> InstalledDayone:
    """A non-editable install of this tree in its own uv venv, once per session."""
    import shutil

    from probes.tools import find_uv

    base = tmp_path_factory.mktemp("installed")
    tree = base / "src"
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", "build", "node_modules", "bench"
        ),
    )
    venv = base / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    for cmd in (
        [find_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)],
        [find_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(tree)],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    installed = InstalledDayone(venv)
    where = subprocess.run(
        [str(installed.python), "-c", "import probes; print(probes.__file__)"],
        capture_output=True,
        text=True,
        cwd=base,
        env=env,
    ).stdout
    assert "site-packages" in where, where  # really installed, not the checkout
    return installed
