"""Host-side build tools: uv, and a pip of our own for the steps uv has no command for.

Standard library only. Nothing of the host interpreter is assumed: dayone installed with uv has
no pip, so pip (downloading an sdist, building a source-only wheel) runs from a small venv that
uv itself seeds, kept in the cache.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path


def cache_dir() -> Path:
    """`$DAYONE_CACHE`, else `~/.cache/dayone`: engine environments, wheels, sources, the probe
    package copies. Set but empty means the default (an unset variable in a shell script or a
    compose file arrives empty, and "" would be the working folder)."""
    return Path(os.environ.get("DAYONE_CACHE") or "~/.cache/dayone").expanduser()


def find_uv() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except ImportError:
        found = shutil.which("uv")
        if not found:
            raise RuntimeError("uv is not installed: pip install uv") from None
        return found


def pip_python(cache: Path) -> Path:
    """The python of a venv with pip in it (`uv venv --seed`), built once under cache/tools."""
    venv = cache / "tools" / "pip-venv"
    python = venv / "bin" / "python"
    if (venv / ".ready").exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".pip-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel builds wait for the one venv
        if (venv / ".ready").exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        proc = subprocess.run(
            [find_uv(), "venv", "--quiet", "--seed", "--python", sys.executable, str(venv)],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
        )
        if proc.returncode:
            raise RuntimeError(f"could not make a pip venv with uv:\n{proc.stderr[-2000:]}")
        (venv / ".ready").write_text("")
    return python
