"""The transformers probe end to end through `dayone probe --json`, on every fixture."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import json_lines, run_dayone
from probes import fixtures, workload

# The verdicts the tracker must give each broken fixture at `load` (then generate is skipped).
BROKEN_EXPECT = {
    "broken-unknown-arch": ("fail", "unsupported_architecture"),
    "broken-truncated-weights": ("fail", "corrupt_or_missing_weights"),
    "broken-missing-weights": ("fail", "corrupt_or_missing_weights"),
    "broken-unreadable-config": ("fail", "corrupt_or_missing_weights"),
}


@pytest.fixture(scope="module")
def probed(fixtures_dir, tmp_path_factory):
    """Every fixture probed once through the CLI, into one store."""
    db = f"sqlite:///{tmp_path_factory.mktemp('store') / 'dayone.db'}"
    out = {}
    for name in fixtures.all_names():
        proc = run_dayone("probe", str(fixtures_dir / name), "--engine", "transformers", "--json", "--db", db)
        out[name] = json_lines(proc.stdout)
    return out, db


@pytest.mark.parametrize("name", list(fixtures.FAMILIES))
def test_healthy_fixture_passes_load_and_generate(probed, name, validate_record):
    records = probed[0][name]
    assert [r["stage"] for r in records] == ["load", "generate"]
    for r in records:
        validate_record(r)
        assert r["status"] == "pass", (r["stage"], r["message"], r["log_excerpt"])
        assert r["failure_class"] is None
    gen = records[1]
    assert gen["metrics"]["new_tokens"] == workload.MAX_NEW_TOKENS * len(workload.PROMPTS)
    completions = gen["output"]["completions"]
    assert all(len(c["token_ids"]) == 16 and len(c["top_logprobs"]) == 16 for c in completions)
    assert all(len(step) == 5 for c in completions for step in c["top_logprobs"])


@pytest.mark.parametrize("name", list(BROKEN_EXPECT))
def test_broken_fixture_gets_its_verdict(probed, name, validate_record):
    load, generate = probed[0][name]
    validate_record(load)
    validate_record(generate)
    assert (load["status"], load["failure_class"]) == BROKEN_EXPECT[name], load["message"]
    assert load["message"] and load["log_excerpt"]
    assert generate["status"] == "skipped"
    assert generate["message"] == "blocked by load (fail)"


def test_record_names_environment_and_reproduces_bare(probed, fixtures_dir):
    load = probed[0]["broken-unknown-arch"][0]
    eng = load["engine"]
    assert eng["name"] == "transformers" and eng["version"] == "5.23.0"
    assert {"transformers", "torch"} <= set(eng["packages"])
    assert eng["environment_id"].startswith("transformers-5.23.0-")
    assert eng["hardware"].startswith("cpu")
    # The reproduce command is the engine alone (no dayone) and fails the same way.
    cmd = load["reproduce"]
    assert "-m probes" not in cmd and "service.cli" not in cmd and "PYTHONPATH" not in cmd
    script = Path(cmd.split()[-1]).read_text()
    assert "from transformers import" in script and "import probes" not in script
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "does not recognize this architecture" in proc.stderr


def test_probe_records_into_store_and_results_reads_them(probed, validate_record):
    _, db = probed
    proc = run_dayone("results", "--model", "dayone-fixtures/llama", "--json", "--db", db)
    stored = json_lines(proc.stdout)
    assert {r["stage"] for r in stored} == {"load", "generate"}
    for r in stored:
        validate_record(r)
        assert r["model"]["id"] == "dayone-fixtures/llama"


def test_probe_rejects_bad_input_clearly(tmp_path):
    proc = run_dayone("probe", str(tmp_path / "nope"), "--engine", "transformers", check=False)
    assert proc.returncode == 2 and "not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_dayone("probe", str(tmp_path), "--engine", "nosuchengine", check=False)
    assert proc.returncode == 2 and "unknown engine" in proc.stderr
    proc = run_dayone("probe", str(tmp_path), "--engine", "transformers", "--stage", "dance", check=False)
    assert proc.returncode == 2 and "unknown stage" in proc.stderr
