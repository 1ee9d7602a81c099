"""Structure rules: light `import probes`, one-way imports, the contract copy."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_SCHEMA, ROOT, SHARED_SCHEMA

HEAVY = ("torch", "transformers", "vllm", "llama_cpp", "sglang", "peft", "numpy")


def test_import_probes_imports_no_engine():
    code = ("import sys, probes, probes.runner, probes.record, probes.classify, probes.child, "
            "probes.engines, probes.serving, probes.stages, probes.modelinfo, probes.fixtures;"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
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
    forbidden = {"probes": {"matrix", "service", "sqlalchemy", "fastapi", "typer", "rich",
                            "pydantic", "jsonschema"},
                 "matrix": {"service", "fastapi", "typer"}}
    for package, banned in forbidden.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = _imports(path) & banned
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


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
            bad += [f"{where}.required differs" ] if set(have or []) != set(want) else []
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
