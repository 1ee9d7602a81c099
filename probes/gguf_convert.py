"""HF directory -> GGUF with the converter that ships with the probed llama.cpp release.

Standard library only at import. Two halves:

- Host side, `install_converter(python)`: an environment patch (EngineSpec.patches) run after
  the llamacpp environment is built. It takes the llama-cpp-python version installed in that
  environment, fetches that release's sdist once (cached under $DAYONE_CACHE/sources/) and
  copies its vendored `convert_hf_to_gguf.py`, `conversion/` and `gguf-py/` into the venv
  (`<venv>/llama.cpp-convert/`), with the llama.cpp commit the release vendors. The converter
  of the SAME release as the engine, never a newer one: the converter is itself where new
  architectures break on day one.
- Child side, `python -m probes.gguf_convert --converter DIR [--pretokenizer-fallback NAME] --
  MODEL --outfile F --outtype T`: runs that converter in its own process. The fallback exists
  for dayone's fixtures only (their locally trained tokenizer has a hash no release knows); on a
  real model an unknown pre-tokenizer hash is itself a day-one failure and is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from probes.tools import cache_dir

DIST = "llama-cpp-python"
CONVERTER_DIRNAME = "llama.cpp-convert"
INFO_FILE = "dayone-converter.json"
FALLBACK_MARKER = "dayone: unknown BPE pre-tokenizer hash; fixture fallback to"
# What the converter needs from the sdist, relative to vendor/llama.cpp/.
VENDORED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "LICENSE")


# -- host side --------------------------------------------------------------------------------
def installed_version(python: Path | str, dist: str = DIST) -> str:
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m, sys; "
                          f"print(m.version({dist!r}))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def ensure_sdist(version: str, say=print) -> Path:
    """The release's sdist, downloaded once with pip (the ordinary client; from a venv uv
    seeds, never the host's interpreter, which may have no pip) and cached."""
    from probes.tools import pip_python

    folder = cache_dir() / "sources" / f"{DIST}-{version}"
    found = sorted(folder.glob("*.tar.gz"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    say(f"fetching the {DIST}=={version} sdist for its vendored GGUF converter")
    proc = subprocess.run([str(pip_python(cache_dir())), "-m", "pip", "download", "--no-deps",
                           "--no-binary", ":all:", "-d", str(folder), f"{DIST}=={version}"],
                          capture_output=True, text=True)
    found = sorted(folder.glob("*.tar.gz"))
    if proc.returncode or not found:
        raise RuntimeError(f"could not fetch the {DIST}=={version} sdist:\n"
                           f"{(proc.stdout + proc.stderr)[-2000:]}")
    return found[0]


def vendored_commit(changelog: str, version: str) -> str | None:
    """The llama.cpp commit a release vendors, from its CHANGELOG section for that version."""
    section = re.search(rf"^## \[{re.escape(version)}\](.*?)(?=^## \[|\Z)", changelog,
                        re.M | re.S)
    if not section:
        return None
    found = re.search(r"llama\.cpp@([0-9a-f]{7,40})", section.group(1))
    return found.group(1) if found else None


def extract_converter(sdist: Path, target: Path, version: str) -> dict[str, str | None]:
    """Copy the vendored converter and gguf-py out of the sdist into target (replaced whole)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    changelog = ""
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 1)
            if len(parts) < 2:
                continue
            rel = parts[1]
            if rel == "CHANGELOG.md":
                changelog = tar.extractfile(member).read().decode("utf-8", "replace")
                continue
            prefix = "vendor/llama.cpp/"
            if not rel.startswith(prefix) or not member.isfile():
                continue
            inner = rel[len(prefix):]
            if not any(inner == v or (v.endswith("/") and inner.startswith(v)) for v in VENDORED):
                continue
            if inner.startswith("/") or ".." in Path(inner).parts:
                continue  # a path out of the converter's folder: never written
            member.name = inner
            if hasattr(tarfile, "data_filter"):
                tar.extract(member, tmp, filter="data")  # refuses links/paths out of tmp
            else:  # Python < 3.11.4 (an image's Debian python3): a regular file, checked above
                tar.extract(member, tmp)
    if not (tmp / "convert_hf_to_gguf.py").exists():
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
    info = {"llama_cpp_python": version, "llama_cpp_commit": vendored_commit(changelog, version),
            "source": sdist.name}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return info


def install_converter(python: Path | str) -> None:
    """EngineSpec patch: the environment's own release's converter into `<venv>/llama.cpp-convert`."""
    venv = Path(python).parent.parent
    version = installed_version(python)
    info = extract_converter(ensure_sdist(version), venv / CONVERTER_DIRNAME, version)
    print(f"installed the GGUF converter of {DIST}=={version} "
          f"(llama.cpp {info['llama_cpp_commit'] or 'unknown'}) into {venv / CONVERTER_DIRNAME}")


# -- child side -------------------------------------------------------------------------------
def converter_dir(options: dict | None = None) -> Path:
    """Where the converter is: an explicit option, $DAYONE_LLAMACPP_CONVERTER, else the venv's."""
    explicit = (options or {}).get("converter_dir") or os.environ.get("DAYONE_LLAMACPP_CONVERTER")
    return Path(explicit) if explicit else Path(sys.prefix) / CONVERTER_DIRNAME


def converter_info(folder: Path) -> dict:
    try:
        return json.loads((folder / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}


def outtype_for(config: dict) -> str:
    """The GGUF type that keeps the model's own dtype (a float32 probe of a bf16 release can
    hide or invent failures)."""
    dtype = str(config.get("dtype") or config.get("torch_dtype")
                or (config.get("text_config") or {}).get("dtype") or "").lower()
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(dtype, "auto")


def gguf_header(path: Path) -> tuple[int, int, int]:
    """(version, tensor count, metadata count) from a GGUF file's fixed header."""
    import struct

    with open(path, "rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file (magic {head[:4]!r})")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    return version, n_tensors, n_kv


def error_line(output: str) -> str:
    """The converter's own reason: its last ERROR log line or the exception it died with."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("ERROR:") or re.match(r"^[\w.]+(Error|Exception|Interrupt)\b.*", ln):
            return ln
    return lines[-1] if lines else "the converter exited without a message"


def _fallback_pretokenizer(text_model: Any, fallback: str) -> None:
    """An unknown pre-tokenizer hash (our fixture tokenizers only) reads as `fallback`."""
    original = text_model.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError as exc:
            if "pre-tokenizer" not in str(exc):
                raise
            print(f"{FALLBACK_MARKER} {fallback!r}", file=sys.stderr, flush=True)
            return fallback

    text_model.get_vocab_base_pre = get_vocab_base_pre


def _run_converter(folder: Path, args: list[str], fallback: str | None) -> None:
    sys.path[:0] = [str(folder), str(folder / "gguf-py")]
    script = folder / "convert_hf_to_gguf.py"
    sys.argv = [str(script), *args]
    if fallback and not (folder / "conversion" / "base.py").exists():
        # Before llama.cpp split its converter into the `conversion` package (llama-cpp-python
        # 0.3.21 and older) the models live in the script itself: load it as a module, patch
        # it there, and run its main.
        import importlib.util

        spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["convert_hf_to_gguf"] = module
        spec.loader.exec_module(module)
        _fallback_pretokenizer(module.TextModel, fallback)
        module.main()
        return
    if fallback:
        import conversion.base as base  # the vendored converter's own module

        _fallback_pretokenizer(base.TextModel, fallback)
    runpy.run_path(str(script), run_name="__main__")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m probes.gguf_convert")
    p.add_argument("--converter", type=Path, required=True)
    p.add_argument("--pretokenizer-fallback", default=None,
                   help="pre-tokenizer name for an unknown hash (dayone fixtures only)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="-- converter arguments")
    args = p.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    _run_converter(args.converter, rest, args.pretokenizer_fallback)
    return 0


if __name__ == "__main__":
    sys.exit(main())
