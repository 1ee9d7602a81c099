"""The GitHub Actions workflows, checked here since they cannot run here.

Each workflow file must parse, validate against the GitHub workflow JSON schema (the copy
vendored in the check-jsonschema package, offline), and pass actionlint-like checks: the needs
graph, expressions that name real matrix keys / steps / inputs / needs, pinned actions, a time
limit per job, bash that parses, and every `dayone ...` command and option it calls existing in
dayone's CLI.
"""

from __future__ import annotations

import graphlib
import importlib.resources
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)
SEPARATORS = {"&&", "||", ";", "|", "then", "do", "else", "!", "time", "exec"}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads the key `on` as True; GitHub reads it as the string 'on'."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))


def load(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_Loader)


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.y*ml"))


@pytest.fixture(scope="module")
def schema() -> dict:
    text = (
        importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "github-workflows.json"
    ).read_text()
    return json.loads(text)


@pytest.fixture(scope="module")
def cli() -> Any:
    import typer.main

    from service.cli import app

    return typer.main.get_command(app)


def test_nightly_workflow_exists():
    assert (WORKFLOWS / "nightly.yml").is_file()


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_valid_against_the_github_workflow_schema(path, schema):
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(load(path)), key=str)
    assert not errors, f"{path.name}: {errors[0].message} at {list(errors[0].absolute_path)}"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_needs_graph_limits_and_pinned_actions(path):
    jobs = load(path)["jobs"]
    graph = {}
    for name, job in jobs.items():
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        unknown = set(needs) - set(jobs)
        assert not unknown, f"{name} needs unknown jobs {unknown}"
        graph[name] = set(needs)
        assert "timeout-minutes" in job, f"{name}: no timeout-minutes (default is 6 hours)"
        assert job.get("runs-on"), f"{name}: no runs-on"
        for step in job.get("steps", []):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", step["uses"]), step["uses"]
    list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle


FROM_PLAN = re.compile(r"^\$\{\{\s*fromJSON\(needs\.plan\.outputs\.(\w+)\)\s*\}\}$")


def _generated_matrix(output: str) -> dict[str, Any]:
    """What `dayone plan --matrix OUTPUT` prints with no new release (the registry's versions),
    plus one new release, so every key a job can read is there."""
    from matrix import engine_watch as ew
    from probes.engines import ENGINES

    watched = ew.load_watch()
    defaults = {w.engine: ENGINES[w.engine].default_version for w in watched}
    if output == "full":
        return ew.full_matrix(watched, defaults)
    arch = [w for w in watched if w.settings.arch]
    new = [ew.EngineWork(engine=arch[0].engine, version="99.0.0", package=arch[0].package, uploaded_at=None)]
    return ew.arch_matrix([f"{w.engine}=={defaults[w.engine]}" for w in arch], new, shards=4)


def _job_matrix(job: dict[str, Any]) -> dict[str, Any]:
    """A job's matrix; one the plan job writes (`fromJSON(needs.plan.outputs.X)`) generated."""
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    if isinstance(matrix, str):
        match = FROM_PLAN.match(matrix.strip())
        assert match, f"a matrix expression reads the plan job's output: {matrix}"
        return _generated_matrix(match.group(1))
    return matrix


def _matrix_keys(job: dict[str, Any]) -> set[str]:
    matrix = _job_matrix(job)
    keys = {k for k in matrix if k not in ("include", "exclude")}
    for extra in matrix.get("include", []) or []:
        keys |= set(extra)
    return keys


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)] + [s for k in node for s in _strings(k)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_expressions_name_what_exists(path):
    wf = load(path)
    dispatch = ((wf.get("on") or {}).get("workflow_dispatch") or {}) if isinstance(wf.get("on"), dict) else {}
    inputs = set((dispatch or {}).get("inputs") or {})
    top_env = set(wf.get("env") or {})
    for name, job in wf["jobs"].items():
        needs = job.get("needs", [])
        needs = {needs} if isinstance(needs, str) else set(needs)
        matrix = _matrix_keys(job)
        step_ids: set[str] = set()
        envs = top_env | set(job.get("env") or {})
        all_ids = {s["id"] for s in job.get("steps", []) if "id" in s}
        for where, node in [
            ("job", {k: v for k, v in job.items() if k != "steps"}),
            *[(f"step {i}", s) for i, s in enumerate(job.get("steps", []))],
        ]:
            step_env = envs | set(node.get("env") or {}) if where != "job" else envs
            for text in _strings(node):
                for expr in EXPR.findall(text):
                    for ref, key in re.findall(r"\b(matrix|steps|needs|inputs|env)\.([\w-]+)", expr):
                        # job-level keys (environment url) may read any step of the job
                        steps = all_ids if where == "job" else step_ids
                        known = {
                            "matrix": matrix,
                            "steps": steps,
                            "needs": needs,
                            "inputs": inputs,
                            "env": step_env,
                        }[ref]
                        assert key in known, f"{path.name} {name} {where}: {ref}.{key} unknown"
            if where != "job" and "id" in node:
                step_ids.add(node["id"])


def _run_scripts(wf: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (name, step["run"])
        for name, job in wf["jobs"].items()
        for step in job.get("steps", [])
        if "run" in step
    ]


def _commands(script: str) -> list[list[str]]:
    """Each simple command of a bash script, as words (expressions replaced by a word)."""
    text = EXPR.sub("EXPR", script).replace("\\\n", " ")
    commands: list[list[str]] = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        current: list[str] = []
        for word in words:
            if word in SEPARATORS or word.endswith(";"):
                if word.endswith(";") and word not in SEPARATORS:
                    current.append(word[:-1])
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
        if current:
            commands.append(current)
    return commands


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_run_scripts_parse_in_bash(path):
    for job, script in _run_scripts(load(path)):
        proc = subprocess.run(["bash", "-n"], input=EXPR.sub("EXPR", script), text=True, capture_output=True)
        assert proc.returncode == 0, f"{path.name} {job}: {proc.stderr}"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_every_dayone_call_is_a_real_command_with_real_options(path, cli):
    calls = [
        (job, c)
        for job, script in _run_scripts(load(path))
        for c in _commands(script)
        if c and c[0] == "dayone"
    ]
    for job, words in calls:
        command = cli  # typer's own click: groups are whatever has `commands`
        rest = words[1:]
        while hasattr(command, "commands") and rest:
            assert rest[0] in command.commands, f"{path.name} {job}: `dayone {rest[0]}` unknown"
            command, rest = command.commands[rest[0]], rest[1:]
        assert not hasattr(command, "commands"), f"{path.name} {job}: {words} is a group"
        options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for word in rest:
            if word.startswith("--"):
                flag = word.split("=", 1)[0]
                assert flag in options, f"{path.name} {job}: {' '.join(words[:3])} has no {flag}"


def test_nightly_matrix_uploads_and_publishes():
    wf = load(WORKFLOWS / "nightly.yml")
    assert wf["on"].get("schedule"), "the nightly runs on a schedule"
    jobs = wf["jobs"]
    probe_jobs = {n: j for n, j in jobs.items() if (j.get("strategy") or {}).get("matrix")}
    assert probe_jobs, "one matrix job per (engine version, hardware)"
    labels = {n: j["runs-on"] for n, j in probe_jobs.items()}
    assert any(v == "ubuntu-latest" for v in labels.values()), "arch tier on standard runners"
    assert any(isinstance(v, list) and "self-hosted" in v and "gpu" in v for v in labels.values()), (
        "full tier on self-hosted GPU runners"
    )

    from probes.engines import ENGINES

    for name, job in probe_jobs.items():
        expr = job["strategy"]["matrix"]
        assert isinstance(expr, str) and FROM_PLAN.match(expr.strip()), (
            f"{name}: the job matrix comes from the plan job, nothing hard-coded"
        )
        assert "plan" in ([job["needs"]] if isinstance(job["needs"], str) else job["needs"])
        matrix = _job_matrix(job)
        json.loads(json.dumps(matrix))  # fromJSON takes it
        entries = matrix.get("engine", []) + [i["engine"] for i in matrix.get("include", [])]
        assert entries, name
        for entry in entries:
            assert entry.split("==")[0] in ENGINES, f"{name}: {entry} is not a registered engine"
        uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
        assert uploads and all(u["with"]["name"].startswith("results-") for u in uploads), name
        scripts = " ".join(s.get("run", "") for s in job["steps"])
        assert "dayone nightly" in scripts and "--out" in scripts, name
        for watchlist in re.findall(r"--watchlist\s+(\S+)", scripts):
            assert (ROOT / watchlist).is_file(), f"{name}: {watchlist} is not in the repo"

    ((publish_name, publish),) = [
        (n, j)
        for n, j in jobs.items()
        if any("deploy-pages" in str(s.get("uses", "")) for s in j.get("steps", []))
    ]
    needs = publish.get("needs", [])
    assert set(probe_jobs) <= set(needs), "publish waits for every probe job"
    assert publish["permissions"].get("pages") == "write"
    assert publish["permissions"].get("id-token") == "write"
    steps = publish["steps"]
    downloads = [s for s in steps if str(s.get("uses", "")).startswith("actions/download-artifact@")]
    assert downloads and downloads[0]["with"]["pattern"] == "results-*"
    order = [s.get("run", s.get("uses", "")) for s in steps]
    ingest = next(i for i, s in enumerate(order) if "dayone ingest" in s)
    export = next(i for i, s in enumerate(order) if "dayone export" in s)
    deploy = next(i for i, s in enumerate(order) if "deploy-pages" in s)
    assert ingest < export < deploy


def test_ci_workflow_runs_the_readme_test_command():
    path = WORKFLOWS / "ci.yml"
    if not path.exists():
        pytest.fail(".github/workflows/ci.yml is missing: CI must run the README's test command")
    scripts = " ".join(s for _job, s in _run_scripts(load(path)))
    assert "bash .ci/run" in scripts or "scripts/test.sh" in scripts


def test_plan_job_writes_the_matrices_and_shards_the_sweep():
    wf = load(WORKFLOWS / "nightly.yml")
    plan = wf["jobs"]["plan"]
    outputs = set(plan["outputs"])
    scripts = " ".join(s.get("run", "") for s in plan["steps"])
    for name, job in wf["jobs"].items():
        expr = (job.get("strategy") or {}).get("matrix")
        if isinstance(expr, str):
            output = FROM_PLAN.match(expr.strip()).group(1)
            assert output in outputs, f"{name} reads plan output {output} the plan lacks"
            assert f"dayone plan --matrix {output}" in scripts
            assert f"{output}=" in scripts and "GITHUB_OUTPUT" in scripts
    arch = wf["jobs"]["arch"]
    steps = {s["name"]: s for s in arch["steps"] if "name" in s}
    sweep = next(s for n, s in steps.items() if "dayone sweep" in s.get("run", ""))
    assert sweep["if"] == "matrix.sweep" and '--shard "${{ matrix.shard }}"' in sweep["run"]
    nightly = next(s for n, s in steps.items() if "dayone nightly" in s.get("run", ""))
    assert nightly["if"] == "matrix.models"
    for row in _generated_matrix("arch")["include"]:
        i, n = (int(x) for x in row["shard"].split("/"))
        assert 1 <= i <= n and row["models"] == (i == 1)
