"""Structure rules: light `import probes`, one-way imports, the contract copy."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

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


def test_contract_copy_extends_the_shared_one():
    """The project's copy says everything the shared contract says, the same way; it may
    document more optional fields (the contract allows extra fields: `confirmed`)."""
    assert SHARED_SCHEMA.exists(), f"shared contract missing at {SHARED_SCHEMA}"
    ours, shared = json.loads(PROJECT_SCHEMA.read_text()), json.loads(SHARED_SCHEMA.read_text())
    assert ours["required"] == shared["required"]
    for key, value in shared.items():
        if key != "properties":
            assert ours[key] == value, key
    for name, definition in shared["properties"].items():
        assert ours["properties"][name] == definition, name
