"""Structure rules: light `import probes`, one-way imports, the contract copy."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_SCHEMA, ROOT, SHARED_SCHEMA

HEAVY = ("torch", "transformers", "vllm", "llama_cpp", "sglang", "peft", "numpy")


def test_import_probes_imports_no_engine():
    code = (
        "import sys, probes, probes.runner, probes.record, probes.classify, probes.child, "
        "probes.engines, probes.serving, probes.stages, probes.modelinfo, probes.fixtures;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.strip()
    assert out == "[]"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_imports_go_one_way():
    """service -> matrix -> probes; probes needs only the standard library (+ its engine)."""
    forbidden = {
        "probes": {"matrix", "service", "sqlalchemy", "fastapi", "typer", "rich", "pydantic", "jsonschema"},
        "matrix": {"service", "fastapi", "typer"},
    }
    for package, banned in forbidden.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = _imports(path) & banned
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_probes_names_no_host_module_even_in_strings():
    """A "matrix.x:f" string is an import the test above cannot see (engine patches are keys
    the host side resolves)."""
    host = re.compile(r"\b(matrix|service)\.[a-z_]\w*")
    for path in (ROOT / "probes").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found = host.search(node.value)
                assert not found, f"{path.relative_to(ROOT)}:{node.lineno} names {found[0]}"


def test_every_patch_an_engine_names_exists():
    from matrix.environments import PATCHES
    from probes.engines import ENGINES

    named = {key for spec in ENGINES.values() for key in spec.patches}
    assert named and named <= set(PATCHES), sorted(named - set(PATCHES))


def _extends(project, shared, where: str = "$") -> list[str]:
    """Where the project's schema is not a compatible extension of the shared one: every shared
    property kept with its meaning, enums only widened, nothing newly required."""
    if not isinstance(shared, dict) or not isinstance(project, dict):
        return [] if project == shared else [f"{where}: {project!r} != {shared!r}"]
    bad = []
    for key, want in shared.items():
        have = project.get(key)
        if key == "enum":
            bad += [f"{where}.enum lacks {v!r}" for v in want if v not in (have or [])]
        elif key == "required":
            bad += [f"{where}.required differs"] if set(have or []) != set(want) else []
        elif key == "properties":
            for name, sub in want.items():
                if name not in (have or {}):
                    bad.append(f"{where}.{name} missing")
                else:
                    bad += _extends(have[name], sub, f"{where}.{name}")
        else:
            bad += _extends(have, want, f"{where}.{key}")
    return bad


def test_contract_copy_extends_the_shared_contract():
    """The project's own schema is the contract (users have no folder beside the project); where
    the shared copy exists, the project's may only add optional fields and widen enums."""
    if not SHARED_SCHEMA.exists():
        pytest.skip(f"no shared contract beside the project ({SHARED_SCHEMA})")
    project = json.loads(PROJECT_SCHEMA.read_text())
    assert not _extends(project, json.loads(SHARED_SCHEMA.read_text()))


def test_every_field_a_record_may_carry_is_in_the_contract(result_schema):
    """The schema allows extra fields (other tools may add their own), so it cannot reject a
    field we forgot to list: hold the typed record, its engine and model parts against it."""
    from dataclasses import fields

    from probes.modelinfo import ModelInfo
    from probes.record import EngineFields, Record

    props = result_schema["properties"]
    typed = {
        "$": (set(Record.__required_keys__ | Record.__optional_keys__), props),
        "$.engine": (set(EngineFields.__optional_keys__), props["engine"]["properties"]),
        "$.model": ({f.name for f in fields(ModelInfo)}, props["model"]["properties"]),
    }
    missing = [
        f"{where}.{key}" for where, (keys, listed) in typed.items() for key in sorted(keys - set(listed))
    ]
    assert not missing, f"written but not in probes/result.schema.json: {missing}"
    assert set(Record.__required_keys__) >= set(result_schema["required"])


def test_every_record_constructor_follows_the_contract(validate_record):
    """Each way a record is made, built through probes.record.make_record, validates; and
    none writes a field the typed record does not know."""
    from probes.record import (
        Record,
        not_applicable_records,
        refused_records,
        unrun_records,
        with_skipped_stage,
    )

    model = {
        "id": "org/m",
        "revision": "abc",
        "model_type": "llama",
        "architecture": None,
        "lineage": {"source": "synthetic"},
    }
    made = [
        *refused_records(
            stages=["load", "generate"],
            engine="vllm",
            engine_version="1",
            model=model,
            message="links outside",
            failure_class="infra",
            run_id="r",
            host="box",
        ),
        *not_applicable_records(
            stages=["load"], engine="vllm", engine_version="1", model=model, why="an encoder"
        ),
        *unrun_records(
            stages=["load"],
            model=model,
            engine={"name": "vllm", "version": "1", "environment_id": "env-1"},
            status="error",
            message="shrink failed",
            failure_class="shrink",
            started_at="2025-01-01T00:00:00+00:00",
            tier="arch",
            run_id="r",
        ),
    ]
    with_parity = with_skipped_stage(made[:2], "parity", "no reference", made[0]["started_at"])
    assert [r["stage"] for r in with_parity] == ["load", "generate", "parity"]
    known = Record.__required_keys__ | Record.__optional_keys__
    for record in [*made, with_parity[-1]]:
        validate_record(record)
        assert set(record) <= known


def test_the_wheel_ships_every_file_of_the_packages(tmp_path):
    """What users `pip install` holds every tracked file of probes/, matrix/ and service/: the
    release catalogue, rules, templates (an installed dayone without its catalogue would shrink
    every architecture from a default config)."""
    import subprocess
    import sys
    import zipfile

    tracked = subprocess.run(
        ["git", "ls-files", "probes", "matrix", "service"], cwd=ROOT, capture_output=True, text=True
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("dayone-*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    files = []
    for f in tracked.stdout.split():
        if (ROOT / f).is_dir():  # a link to a folder (matrix/images -> docker): its files
            files += [f"{f}/{p.name}" for p in sorted((ROOT / f).iterdir()) if p.is_file()]
        else:
            files.append(f)
    assert any(f.startswith("matrix/images/") and f.endswith(".Dockerfile") for f in files)
    missing = [f for f in files if f not in shipped]
    assert not missing, missing[:20]
