"""The version axis: the same fixtures in three real transformers releases, side by side.

Measured facts this relies on: 4.49.0 knows neither qwen3 nor gemma3; 4.51.x knows both;
5.x is current. The verdicts must differ exactly there, and "supported since" must name the
first passing release.
"""

from __future__ import annotations

import json
import pytest

from conftest import json_lines, run_dayone

VERSIONS = ["4.49.0", "4.51.3", "5.23.0"]
MODELS = ["llama", "qwen3", "gemma3_text", "qwen3_moe"]
FIRST_PASS = {"llama": "4.49.0", "qwen3": "4.51.3", "gemma3_text": "4.51.3", "qwen3_moe": "4.51.3"}


@pytest.fixture(scope="module", params=["checkout", "installed"])
def axis(request, tmp_path_factory):
    """One command: build three environments, probe the fixtures in all three, store. Run
    from the checkout and from dayone installed as a user installs it (non-editable)."""
    if request.param == "installed":
        installed = request.getfixturevalue("installed_dayone")

        def run_dayone(*args, timeout=900):
            return installed.run(*args, timeout=timeout)
    else:
        from conftest import run_dayone
    home = tmp_path_factory.mktemp("axis")
    db = f"sqlite:///{home / 'dayone.db'}"
    args = ["demo", "--workdir", str(home / "fixtures"), "--no-serve", "--db", db]
    for v in VERSIONS:
        args += ["--engine", f"transformers=={v}"]
    for m in MODELS:
        args += ["--only", m]
    run_dayone(*args, timeout=1800)
    records = json_lines(run_dayone("results", "--json", "--db", db).stdout)
    return records, db, run_dayone


def test_verdicts_differ_exactly_where_releases_do(axis):
    records, _, _ = axis
    load = {
        (r["model"]["id"].split("/")[-1], r["engine"]["version"]): r for r in records if r["stage"] == "load"
    }
    assert len(load) == len(VERSIONS) * len(MODELS)
    for model in MODELS:
        for version in VERSIONS:
            r = load[(model, version)]
            should_pass = VERSIONS.index(version) >= VERSIONS.index(FIRST_PASS[model])
            if should_pass:
                assert r["status"] == "pass", (model, version, r["message"])
            else:
                assert (r["status"], r["failure_class"]) == ("fail", "unsupported_architecture"), (
                    model,
                    version,
                    r["message"],
                )
            assert r["engine"]["packages"]["transformers"] == version
            assert r["engine"]["environment_id"].startswith(f"transformers-{version}-")
            assert all(i["in_env"] for i in r["engine"]["imports"].values()), r["engine"]["imports"]


def test_summary_names_first_passing_version(axis):
    _, db, run_dayone = axis
    rows = json.loads(run_dayone("results", "--summary", "--json", "--db", db).stdout)
    since = {r["model"].split("/")[-1]: r["supported_since"] for r in rows if r["engine"] == "transformers"}
    assert since == FIRST_PASS
    table = run_dayone("results", "--summary", "--db", db).stdout
    assert "supported since" in table and "4.51.3" in table


def test_a_built_environment_is_found_not_rebuilt(axis):
    from matrix import environments

    before = {e.environment_id: (e.built_at, e.key) for e in environments.list_envs("transformers")}
    again = [environments.ensure_env("transformers", v, say=print) for v in VERSIONS]
    for env in again:
        assert (env.built_at, env.key) == before[env.environment_id]
    listed = json.loads(run_dayone("env", "list", "--json").stdout)
    assert {e["version"] for e in listed if e["engine"] == "transformers"} >= set(VERSIONS)
