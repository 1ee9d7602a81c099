"""Fixes applied to an engine environment after install (EngineSpec.patches).

Each patch takes the environment's python path, is idempotent, and records what it did in
`<venv>/dayone-patches.json`, so the environment's fingerprint says the env is not pristine.
Standard library only, and nothing else of dayone imported: the probe images run this same
module inside their build (`python3 -m matrix.env_patches PYTHON module:function ...`), so a
container runs what the local venv runs.

Why they exist: vllm-cpu (and SGLang's CPU path) drag in the PyPI builds of torchvision,
torchaudio and torchcodec, which are built against CUDA torch and fail to import beside the CPU
torch. vLLM imports torchvision for its vision-language family modules (Qwen 3.5 among them), so
removing it would turn those models red for our reason, not the engine's: we make the PyPI
torchvision importable instead (its pure-Python parts work; only the C++ ops are missing).
torchaudio/torchcodec raise OSError (not ImportError) at import, which vLLM's optional-import
guards do not catch; removed, they become vLLM's own placeholders.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MARKER = "# dayone patch: tolerate missing C++ ops"
TOLERANT_DECORATOR = f'''
{MARKER} (PyPI torchvision beside CPU torch)
def _dayone_register_fake(name):
    def wrapper(fn):
        try:
            return torch.library.register_fake(name)(fn)
        except RuntimeError:  # "operator torchvision::nms does not exist"
            return fn
    return wrapper

'''
# Packages that are CUDA builds on PyPI and break at import beside CPU torch.
BROKEN_ON_CPU_TORCH = ("torchaudio", "torchcodec")


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def _record(python: Path, what: str) -> None:
    venv = Path(python).parent.parent
    log = venv / "dayone-patches.json"
    done = json.loads(log.read_text()) if log.exists() else []
    if what not in done:
        done.append(what)
    log.write_text(json.dumps(done, indent=2) + "\n")


def recorded_patches(python: Path) -> list[str]:
    log = Path(python).parent.parent / "dayone-patches.json"
    return json.loads(log.read_text()) if log.exists() else []


def tolerant_registrations(source: str) -> str:
    """torchvision/_meta_registrations.py with every `register_fake` tolerant of missing ops.

    Pure: the text in, the patched text out; unchanged if already patched or nothing to patch.
    """
    if MARKER in source or "@torch.library.register_fake(" not in source:
        return source
    patched = source.replace("@torch.library.register_fake(", "@_dayone_register_fake(")
    # After the imports, before the first definition.
    first_def = re.search(r"^(@|def )", patched, flags=re.MULTILINE)
    at = first_def.start() if first_def else len(patched)
    return patched[:at] + TOLERANT_DECORATOR.lstrip("\n") + "\n" + patched[at:]


def replace_file(target: Path, text: str) -> None:
    """Write a new file in place of target, never into it: uv installs packages as hard links
    to its cache, so writing into the file would patch the cache and every other env."""
    tmp = target.with_name(f".{target.name}.dayone-tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


def _imports(python: Path, module: str) -> tuple[bool, str]:
    proc = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 0, (lines[-1] if lines else "")


def patch_torchvision(python: Path) -> str | None:
    """Make the PyPI torchvision importable beside CPU torch; None if it already imports."""
    ok, _ = _imports(python, "torchvision")
    if ok:
        return None
    target = site_packages(python) / "torchvision" / "_meta_registrations.py"
    if not target.exists():
        return None
    source = target.read_text()
    patched = tolerant_registrations(source)
    if patched != source:
        replace_file(target, patched)
    ok, last = _imports(python, "torchvision")
    if not ok:
        raise RuntimeError(f"torchvision still does not import after the patch: {last}")
    what = "torchvision/_meta_registrations.py: register_fake tolerates missing C++ ops"
    _record(python, what)
    return what


def _uv() -> str | None:
    """uv where there is one (dayone's venvs have no pip); None in an image's build."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # the uv package dayone depends on, on the host

        return find_uv_bin()
    except ImportError:
        return None


def _pip(python: Path, verb: str, *args: str) -> None:
    """`uv pip VERB` on the env, else the env's own pip (an image's venv: `python3 -m venv`)."""
    uv = _uv()
    cmd = ([uv, "pip", verb, "--python", str(python), *args] if uv else
           [str(python), "-m", "pip", "--disable-pip-version-check", verb,
            *(["-y"] if verb == "uninstall" else []), *args])
    subprocess.run(cmd, capture_output=True, text=True, check=True)


def remove_broken_cuda_packages(python: Path) -> list[str]:
    """Uninstall the CUDA-only packages that fail at import (recorded, one line each)."""
    done = []
    for name in BROKEN_ON_CPU_TORCH:
        ok, last = _imports(python, name)
        if ok or "No module named" in last:
            continue
        _pip(python, "uninstall", name)
        reason = re.sub(r"/\S*/", "", last)[:160]  # no host paths in the fingerprint
        what = f"removed {name} (CUDA build; import failed: {reason})"
        _record(python, what)
        done.append(what)
    return done


def vllm_cpu(python: Path) -> list[str]:
    """The fixes vllm-cpu needs on a CPU-only machine."""
    done = remove_broken_cuda_packages(python)
    tv = patch_torchvision(python)
    return done + ([tv] if tv else [])


def env_version(python: Path) -> str:
    """The engine version of an env from its folder (`<engine>-<version>-<key>/venv/bin/python`,
    matrix/environments.py's layout)."""
    folder = Path(python).parent.parent.parent.name
    parts = folder.split("-")
    if len(parts) < 3:
        raise RuntimeError(f"cannot tell the engine version from {folder!r}")
    return "-".join(parts[1:-1])


def install_sglang_no_deps(python: Path) -> str | None:
    """sglang pins a torch (2.14.1) and CUDA kernels that this CPU machine cannot use: its
    spec installs the dependencies minus the CUDA ones with torch 2.13.0, then sglang itself
    here without dependencies."""
    ok, _ = _imports(python, "importlib.metadata; importlib.metadata.version('sglang')")
    if ok:
        return None  # the lock installs it (EngineSpec.no_deps): nothing to do
    version = env_version(python)
    _pip(python, "install", "--no-deps", f"sglang=={version}")
    what = f"installed sglang=={version} without its dependencies (CUDA ones left out)"
    _record(python, what)
    return what


def sglang_cpu(python: Path) -> list[str]:
    """SGLang's CPU path: sglang without its CUDA deps, the CUDA package fixes, a stub
    `sgl_kernel` module."""
    done = [d for d in (install_sglang_no_deps(python),) if d]
    done += vllm_cpu(python)
    stub = install_sgl_kernel_stub(python)
    return done + ([stub] if stub else [])


SGL_KERNEL_STUB = '''"""dayone stub: SGLang imports sgl_kernel at start-up, and there is no CPU build of it on the
package index. SGLang's CPU engine (SGLANG_USE_CPU_ENGINE=1) does not call these kernels for the
paths dayone probes; any call that does reach one fails loudly with this name."""

__version__ = "0.0.0+dayone.stub"


class _Missing:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return _Missing(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(
            f"dayone-infra: sgl_kernel op {self._name} is a dayone stub (no CPU sgl_kernel)")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Missing(f"sgl_kernel.{name}")
'''


def install_sgl_kernel_stub(python: Path) -> str | None:
    target = site_packages(python) / "sgl_kernel"
    init = target / "__init__.py"
    if init.exists() and "dayone stub" in init.read_text():
        return None  # already stubbed
    ok, _ = _imports(python, "sgl_kernel")
    if ok:
        return None  # a real sgl_kernel imports: leave it
    target.mkdir(exist_ok=True)
    (target / "__init__.py").write_text(SGL_KERNEL_STUB)
    what = "installed a stub sgl_kernel module (no CPU build on the index)"
    _record(python, what)
    return what


def apply(python: Path, patches: list[str]) -> None:
    """Run each patch, named `module:function` (environments.patch_name), on PYTHON's env."""
    import importlib

    for name in patches:
        module, _, function = name.partition(":")
        getattr(importlib.import_module(module), function)(Path(python))


if __name__ == "__main__":  # inside an image build: python3 -m matrix.env_patches PYTHON PATCH...
    if len(sys.argv) < 2:
        sys.exit("usage: python3 -m matrix.env_patches PYTHON [module:function ...]")
    apply(Path(sys.argv[1]), sys.argv[2:])
