"""What every engine module builds on. Standard library only."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from probes import workload
from probes.outcome import HarnessError, StageFailure, StageOutcome


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_hardware(fallback: str) -> str:
    """The CUDA device where torch sees one, else `fallback` (child side: imports torch)."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return fallback


# The config keys a position limit goes by, as vLLM and SGLang read them (the smallest wins).
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
                 "model_max_length", "max_sequence_length", "max_seq_length", "seq_len", "n_ctx")


def context_window(config: dict[str, Any], cap: int = 4096) -> int | None:
    """The window to ask a server for: the config's own limit, capped (a 128k window would
    reserve a KV cache this machine does not have). None where the config states none: the
    engine then derives its own. Asking for more than the config states is refused by vLLM and
    SGLang, a red of ours (GPT-2-style configs say n_positions)."""
    text = config.get("text_config")
    scope = text if isinstance(text, dict) else config
    found = [v for k in POSITION_KEYS for v in [scope.get(k)]
             if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return min([*found, cap]) if found else None


class EngineBase:
    """One engine in one probe child. Subclasses set `name`, `package`, `packages`, and define
    `stage_<name>(self) -> StageOutcome` for each stage they run."""

    name: str = ""
    package: str = ""  # the distribution whose version is "the engine version"
    packages: tuple[str, ...] = ()  # other distributions that decide behaviour

    def __init__(self, model_dir: Path, options: dict[str, Any], workdir: Path):
        self.model_dir = Path(model_dir)
        self.options = options
        self.workdir = Path(workdir)
        self.prompts: list[str] = options.get("prompts") or list(workload.PROMPTS)
        self.max_new_tokens: int = int(options.get("max_new_tokens", workload.MAX_NEW_TOKENS))
        self.top_k: int = int(options.get("top_k", workload.TOP_K))
        self.trust_remote_code: bool = bool(options.get("trust_remote_code", False))

    # -- description of the environment -------------------------------------------------
    def version(self) -> str:
        return package_versions((self.package,)).get(self.package, "unknown")

    def hardware(self) -> str:
        return f"cpu:{cpu_name()}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version(),
            "hardware": self.hardware(),
            "packages": package_versions((self.package, *self.packages)),
            "python": platform.python_version(),
        }

    # -- shared stage helpers ------------------------------------------------------------
    completions: list[dict[str, Any]] | None = None
    # Every stage this probe will run (set by the child): a server started for one stage can
    # be started with what later stages need.
    requested_stages: tuple[str, ...] = ()

    def generated(self, completions: list[dict[str, Any]], new_tokens: int,
                  elapsed: float) -> StageOutcome:
        """The generate outcome every engine reports: the forced length checked, the
        completions kept for parity."""
        expected = self.max_new_tokens * len(self.prompts)
        if new_tokens < expected:
            raise StageFailure(f"dayone-wrong-output: generated {new_tokens} tokens, expected "
                               f"{expected}", "wrong_output")
        self.completions = completions
        return StageOutcome(
            metrics={"new_tokens": new_tokens, "prompts": len(self.prompts),
                     "generate_s": round(elapsed, 4),
                     "output_tok_s": round(new_tokens / elapsed, 2) if elapsed else None},
            output={"completions": completions})

    def stage_parity(self) -> StageOutcome:
        from probes import parity

        if self.completions is None:
            raise HarnessError("parity needs `generate` first in the same probe")
        return parity.parity_stage(self.options, self.completions, self.top_k)

    # -- stages ---------------------------------------------------------------------------
    def run_stage(self, stage: str) -> StageOutcome:
        method = getattr(self, f"stage_{stage}", None)
        if method is None:
            raise HarnessError(f"engine {self.name} has no stage {stage!r}")
        return method()

    def close(self) -> None:
        """Free the engine (models, servers). Must be safe to call twice."""
