"""The shrink's rules (probes/shrink_rules.json, data) and the expression evaluator of its
family rules. Standard library only."""

from __future__ import annotations

import ast
import copy
import json
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent  # probes/: the data files live beside the package
RULES_PATH = DATA / "shrink_rules.json"
VARIANTS_PATH = DATA / "sweep_variants.json"
SHRINK_VERSION = 7  # bump when a rule change alters what a shrink builds (7: the release's own class)


class ShrinkError(Exception):
    """The architecture could not be shrunk automatically; the message says why."""


@dataclass(frozen=True)
class Rules:
    targets: dict[str, Any]
    keys: dict[str, Any]
    families: dict[str, dict[str, Any]]

    def family(self, model_type: str | None) -> dict[str, Any]:
        return self.families.get(model_type or "", {})


def load_rules(path: str | None = None) -> Rules:
    """The rules file: `path`, else $DAYONE_SHRINK_RULES, else probes/shrink_rules.json."""
    return _load_rules(str(path or os.environ.get("DAYONE_SHRINK_RULES") or RULES_PATH))


@lru_cache(maxsize=4)
def _load_rules(path: str) -> Rules:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return Rules(targets=data["targets"], keys=data["keys"], families=data.get("families", {}))


def rules_text(path: str | None = None) -> str:
    return Path(path or os.environ.get("DAYONE_SHRINK_RULES") or RULES_PATH).read_text("utf-8")


# Expressions in family rules: names, numbers, + - * // /, min, max, a.b lookups

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "len": len,
    "int": int,
    "count": lambda items, value: list(items).count(value),
    # each item's position among the names: a per-layer
    # kind list as the releases' codes (0 full, 1 sliding)
    "codes": lambda items, *names: [names.index(i) for i in items],
}


def evaluate(expr: Any, local: dict[str, Any], root: dict[str, Any]) -> Any:
    """Evaluate a rule value: non-strings are literals; strings starting with '=' are expressions."""
    if not (isinstance(expr, str) and expr.startswith("=")):
        return copy.deepcopy(expr)
    tree = ast.parse(expr[1:].strip(), mode="eval")

    def lookup(path: list[str]) -> Any:
        for scope in (local, root):
            value: Any = scope
            for part in path:
                if not isinstance(value, dict) or part not in value:
                    break
                value = value[part]
            else:
                return value
        raise ShrinkError(f"rule expression {expr!r}: no value for {'.'.join(path)}")

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str)):
            return node.value
        if isinstance(node, ast.Name):
            return lookup([node.id])
        if isinstance(node, ast.Attribute):
            parts: list[str] = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                parts.insert(0, cur.attr)
                cur = cur.value
            if not isinstance(cur, ast.Name):
                raise ShrinkError(f"rule expression {expr!r}: unsupported lookup")
            return lookup([cur.id, *parts])
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
            return _FUNCS[node.func.id](*[walk(a) for a in node.args])
        if isinstance(node, ast.List):
            return [walk(e) for e in node.elts]
        raise ShrinkError(f"rule expression {expr!r}: unsupported syntax {type(node).__name__}")

    return walk(tree)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
