"""dayone as a user installs it (uv venv, `uv pip install .`, not editable): the probe child
sees the probes package and the engine environment, never the host's site-packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build_fixtures, json_lines
from probes import tools
from probes.record import host_leak
from probes.runner import child_environment, isolated_probes, probes_content_hash

KEY = ("huggingface-hub", "pydantic", "packaging")


# Pure parts


def test_the_probes_copy_holds_probes_alone_and_is_reused(tmp_path):
    root = isolated_probes(tmp_path)
    assert [p.name for p in root.iterdir()] == ["probes"]
    assert (root / "probes" / "rules.json").is_file()  # data files travel too
    assert (root / "probes" / "engines" / "__init__.py").is_file()
    assert not list(root.rglob("__pycache__"))
    mtime = (root / "probes" / "child.py").stat().st_mtime_ns
    assert isolated_probes(tmp_path) == root
    assert (root / "probes" / "child.py").stat().st_mtime_ns == mtime
    assert root.name == probes_content_hash()


def test_a_changed_probes_package_gets_its_own_copy(tmp_path):
    pkg = tmp_path / "src" / "probes"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("A = 1\n")
    first = isolated_probes(tmp_path / "cache", pkg)
    (pkg / "__init__.py").write_text("A = 2\n")
    second = isolated_probes(tmp_path / "cache", pkg)
    assert first != second and (second / "probes" / "__init__.py").read_text() == "A = 2\n"
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".probes-")]


def test_parallel_copies_race_to_one(tmp_path):
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(8) as pool:
        roots = set(pool.map(lambda _: isolated_probes(tmp_path), range(16)))
    assert len(roots) == 1
    assert [p.name for p in tmp_path.iterdir()] == [next(iter(roots)).name]


def test_the_child_environment_drops_host_python_settings(tmp_path):
    host = {
        "PATH": "/usr/bin",
        "PYTHONPATH": "/host/site-packages",
        "PYTHONHOME": "/host",
        "PYTHONSTARTUP": "/host/rc.py",
        "VIRTUAL_ENV": "/host/venv",
        "HOME": "/root",
    }
    env = child_environment(host, {"OMP_NUM_THREADS": "2"}, tmp_path / "p", tmp_path)
    assert env["PYTHONPATH"] == str(tmp_path / "p") and env["PYTHONNOUSERSITE"] == "1"
    for gone in ("PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        assert gone not in env
    assert env["PATH"] == "/usr/bin" and env["OMP_NUM_THREADS"] == "2"
    assert env["TMPDIR"] == str(tmp_path)


def test_host_leak_is_ours():
    assert host_leak(None) is None
    assert host_leak({"imports": {"torch": {"version": "2", "file": "/e/t", "in_env": True}}}) is None
    leak = host_leak(
        {
            "imports": {
                "torch": {"version": "2", "file": "/e/t", "in_env": True},
                "huggingface-hub": {"version": "2.4.0", "file": "/host/hf/__init__.py", "in_env": False},
            }
        }
    )
    assert (leak.status, leak.failure_class) == ("error", "infra")
    assert "host package leaked into the engine environment" in leak.message
    assert "huggingface-hub 2.4.0 from /host/hf/__init__.py" in leak.message


def test_build_steps_need_no_host_pip(tmp_path, monkeypatch):
    """The pip used for sdists and source wheels comes from a venv uv seeds, not the host."""
    monkeypatch.setenv("DAYONE_CACHE", str(tmp_path))
    python = tools.pip_python(tmp_path)
    assert tmp_path in python.parents
    out = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert tools.pip_python(tmp_path) == python  # reused
    import matrix.environments as envs
    import probes.gguf_convert as gc

    for module in (envs, gc):
        source = Path(module.__file__).read_text()
        assert 'sys.executable, "-m", "pip"' not in source


# The installed form


@pytest.fixture(scope="module")
def llama(tf_env, tmp_path_factory) -> Path:
    return build_fixtures(tf_env, tmp_path_factory.mktemp("inst-fix"), ["llama"]) / "llama"


def _probe(
    installed, model: Path, version: str, db: str, **run
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """The installed `dayone probe` of the load and generate stages with one transformers
    release: the process, and the stage records it printed."""
    stages = ("--stage", "load", "--stage", "generate")
    proc = installed.run(
        "probe", str(model), "--engine", f"transformers=={version}", *stages, "--json", "--db", db, **run
    )
    return proc, [r for r in json_lines(proc.stdout) if "stage" in r]


def test_installed_dayone_probes_with_the_engine_envs_packages(installed_dayone, llama, tmp_path):
    """transformers 4.49.0 pins huggingface-hub<1.0; the host has 2.x. From an installed
    dayone the child must import the environment's own."""
    from matrix import environments

    _proc, records = _probe(installed_dayone, llama, "4.49.0", f"sqlite:///{tmp_path / 'd.db'}", timeout=1200)
    assert [(r["stage"], r["status"]) for r in records] == [("load", "pass"), ("generate", "pass")], [
        (r["stage"], r["status"], r["message"]) for r in records
    ]
    env = environments.ensure_env("transformers", "4.49.0")
    for r in records:
        imports = r["engine"]["imports"]
        assert imports["transformers"]["version"] == "4.49.0"
        for name in KEY:
            if name in env.packages:
                assert imports[name] == {**imports[name], "version": env.packages[name], "in_env": True}, name
            else:  # not in the environment: must not be found on the host either
                assert name not in imports, (name, imports.get(name))
    assert imports["huggingface-hub"]["version"].startswith("0.")


def test_a_leaking_import_path_is_error_infra(installed_dayone, llama, tmp_path):
    """The old bug on purpose: the installed site-packages on the child's path. The run is
    ours (error/infra, naming the leak), never the engine's red."""
    from matrix import environments
    from probes.record import build_records
    from probes.runner import ProbeRequest, run_probe

    env = environments.ensure_env("transformers", "4.49.0")
    site = next((installed_dayone.venv / "lib").glob("python*/site-packages"))
    outcome = run_probe(
        ProbeRequest(
            engine="transformers", model_dir=llama, stages=["load"], python=env.python, probes_root=site
        ),
        tmp_path / "log",
    )
    records = build_records(
        stages=["load"],
        outcome=outcome,
        engine="transformers",
        engine_version="4.49.0",
        model={"id": "llama"},
    )
    assert (records[0]["status"], records[0]["failure_class"]) == ("error", "infra")
    assert "host package leaked into the engine environment" in records[0]["message"]


# Verdicts agree with bare transformers scripts

RELEASES = ["4.49.0", "4.51.3", "5.1.0", "5.2.0", "5.4.0", "5.5.0", "5.23.0"]
# What each shrunk copy's architecture needs (measured: the release that added the type).
SUPPORTED_SINCE = {"llama": "4.49.0", "qwen3": "4.51.3", "qwen3_5_text": "5.2.0", "gemma4_text": "5.5.0"}

BARE = """
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
ids = tok("The capital of France is", return_tensors="pt")
out = model.generate(**ids, max_new_tokens=4, do_sample=False)
print("tokens", out[0].tolist())
"""


def _bare_verdict(python: str, model: Path) -> tuple[str, str]:
    """transformers' own API in the same environment, nothing of dayone on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"} | {
        "PYTHONNOUSERSITE": "1"
    }
    proc = subprocess.run(
        [python, "-c", BARE, str(model)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=model.parent,
    )
    if proc.returncode == 0 and "tokens" in proc.stdout:
        return "pass", proc.stdout.strip().splitlines()[-1]
    return "fail", (proc.stderr.strip().splitlines() or ["no output"])[-1]


@pytest.fixture(scope="module")
def shrunk_copies(tf_env, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("copies")
    copies = {}
    for model_type in SUPPORTED_SINCE:
        proc = subprocess.run(
            [tf_env.python, "-m", "probes.shrink", "--model-type", model_type, str(out / model_type)],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        )
        assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
        copies[model_type] = out / model_type
    return copies


@pytest.mark.slow
@pytest.mark.timeout(2700)  # 28 probes and 28 bare scripts, seven environments built
def test_installed_verdicts_agree_with_bare_scripts(installed_dayone, shrunk_copies, tmp_path):
    from matrix import environments

    db = f"sqlite:///{tmp_path / 'axis.db'}"
    table: dict[tuple[str, str], tuple[str, str]] = {}
    ids: dict[str, str] = {}
    disagree = []
    for version in RELEASES:
        for name, model in shrunk_copies.items():
            proc, records = _probe(installed_dayone, model, version, db, timeout=1800, check=False)
            assert records, proc.stderr[-2000:]
            ids[records[0]["model"]["id"]] = name
            bad = next((r for r in records if r["status"] != "pass"), None)
            ours = (
                ("pass", "")
                if bad is None
                else (f"{bad['status']}/{bad['failure_class']}", bad["message"] or "")
            )
            if bad is not None and bad["failure_class"] == "infra":
                table[(version, name)] = (ours[0], "no bare run: " + ours[1][:120])
                disagree.append((version, name, ours, "environment is ours"))
                continue
            env = environments.ensure_env("transformers", version)
            bare = _bare_verdict(env.python, model)
            table[(version, name)] = (ours[0], bare[0])
            if (ours[0] == "pass") != (bare[0] == "pass") or ours[0].startswith("error"):
                disagree.append((version, name, ours, bare))
    print("\nversion  " + "  ".join(f"{n:>22}" for n in shrunk_copies))
    for version in RELEASES:
        cells = (
            "/".join(table[(version, n)][:1]) + " | bare " + table[(version, n)][1][:4] for n in shrunk_copies
        )
        print(f"{version:8} " + "  ".join(f"{c:>22}" for c in cells))
    assert not disagree, disagree
    rows = json.loads(installed_dayone.run("results", "--summary", "--json", "--db", db).stdout)
    since = {
        ids[r["model"]]: r["supported_since"]
        for r in rows
        if r["engine"] == "transformers" and r["model"] in ids
    }
    assert since == SUPPORTED_SINCE


# An environment that does not hold together


def test_an_engine_that_fails_its_own_import_check_breaks_the_environment(tmp_path):
    from matrix import environments
    from probes.engines import get_spec

    venv = tmp_path / "venv"
    subprocess.run(
        [tools.find_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    site = next((venv / "lib").glob("python*/site-packages"))
    # an engine whose import-time dependency check refuses the environment, as transformers
    # refuses a huggingface-hub outside its pin
    (site / "fakeengine").mkdir()
    (site / "fakeengine" / "__init__.py").write_text(
        "raise ImportError('huggingface-hub>=1.5.0,<2.0 is required but found 2.4.0')\n"
    )
    info = site / "fakeengine-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeengine\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("fakeengine\n")
    spec = get_spec("transformers")
    from dataclasses import replace

    check = environments.check_env(replace(spec, package="fakeengine"), venv / "bin" / "python")
    assert "pip_check" in check  # recorded beside
    assert "importing the engine fails" in check["broken"]
    assert "huggingface-hub>=1.5.0,<2.0 is required" in check["broken"]
    good = environments.check_env(replace(spec, package="pip-not-here"), venv / "bin" / "python")
    assert good["broken"] is None


def test_an_environment_that_cannot_be_built_is_error_infra(tmp_path, monkeypatch, tf_env):
    """A pin no index can satisfy: the probe says it is ours, never the engine's red."""
    from matrix.probing import ProbeSettings, probe

    monkeypatch.setenv("DAYONE_CACHE", str(tmp_path / "cache"))
    fixture = build_fixtures(tf_env, tmp_path / "fix", ["llama"]) / "llama"
    records = probe(
        fixture,
        "transformers",
        "0.0.1",
        ["load", "generate"],
        settings=ProbeSettings(logs_root=tmp_path / "logs"),
        say=lambda m: None,
    )
    assert [(r["stage"], r["status"], r["failure_class"]) for r in records] == [
        ("load", "error", "infra"),
        ("generate", "skipped", None),
    ]
    assert records[0]["message"].startswith("the engine environment could not be built")
