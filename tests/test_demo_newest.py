"""The main job (`dayone demo`) also probes arch-tier copies of the newest families: the list
(matrix/newest_families.json) resolves to types the reference transformers shrinks, with lineage,
and the demo's own code path shrinks one and probes it (the sweep's machinery)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import dayone_at, run_in_tree
from matrix.sweep import newest_families


def test_the_newest_families_are_one_list_of_model_types():
    families = newest_families()
    assert list(families.values()) == ["Gemma 4", "Qwen 3.5", "gpt-oss", "Llama 4", "Nemotron-H"]
    assert list(families) == ["gemma4_text", "qwen3_5_text", "gpt_oss", "llama4_text", "nemotron_h"]


def test_demo_only_takes_fixtures_and_newest_types():
    import typer

    from service.cli import _demo_selection

    fixtures, newest = ["llama", "qwen3"], ["gpt_oss", "nemotron_h"]
    assert _demo_selection(None, fixtures, newest) == (None, newest)
    assert _demo_selection(["llama"], fixtures, newest) == (["llama"], [])
    assert _demo_selection(["gpt_oss", "qwen3"], fixtures, newest) == (["qwen3"], ["gpt_oss"])
    with pytest.raises(typer.Exit):
        _demo_selection(["nope"], fixtures, newest)


def test_the_newest_families_shrink_in_the_reference_with_lineage(tf_env, tmp_path):
    """Every listed type is one the reference transformers builds as a causal LM, shrinks
    (the sweep's one-process build), and says where its copy comes from."""
    from probes.shrink.catalogue import type_lineage

    listed = run_in_tree([tf_env.python, "-m", "probes.shrink", "--list-types"], timeout=300).stdout.split()
    types = list(newest_families())
    assert set(types) <= set(listed)
    report = tmp_path / "report.json"
    run_in_tree(
        [
            tf_env.python,
            "-m",
            "probes.shrink",
            "--sweep",
            str(tmp_path),
            "--types",
            ",".join(types),
            "--no-generate",
            "--report",
            str(report),
        ],
        timeout=600,
    )
    rows = {r["model_type"]: r for r in json.loads(report.read_text())["rows"]}
    for t in types:
        assert rows[t]["status"] == "ok", rows[t]
        meta = json.loads((Path(rows[t]["out_dir"]) / "dayone.json").read_text())
        assert meta["lineage"] == type_lineage(t)
        assert meta["lineage"]["source"] in ("release", "synthetic")
    # gpt-oss starts from its catalogued release; a type with none says so
    assert type_lineage("gpt_oss")["repo"] == "openai/gpt-oss-20b"


def test_demo_shrinks_and_probes_a_newest_family(tf_env, tmp_path):
    """`dayone demo --only gpt_oss -e transformers`: no fixture built, gpt-oss shrunk from its
    release and probed through the sweep, stored, on the map."""
    run = dayone_at(tmp_path, timeout=900)
    demo = run("demo", "--only", "gpt_oss", "-e", "transformers", "--no-serve", "--no-confirm")
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-3000:]
    assert "newest families: gpt-oss (arch/gpt_oss)" in demo.stdout
    assert not (tmp_path / "fixtures").exists()
    data = json.loads(run("map", "--json").stdout)
    assert data["lineage"]["gpt_oss"]["repo"] == "openai/gpt-oss-20b"
    cell = data["cells"]["gpt_oss"]["transformers"]
    assert set(cell["stages"]) == {"load", "generate"}
    assert cell["status"] is not None
    # the newest-family table the demo ends with
    assert "gpt_oss" in demo.stdout and "newest families" in demo.stdout
    # --no-newest: nothing of the kind
    again = run("demo", "--only", "gpt_oss", "--no-newest", "-e", "transformers", "--no-serve")
    assert again.returncode == 0 and "newest families" not in again.stdout
