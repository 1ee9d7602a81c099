"""SGLang, probed through its server protocol (the same on CPU and GPU). Child side.

One server start serves every stage: load (launch_server, /health, /get_model_info), generate
(the native /generate with top logprobs), parity, serve (/v1/chat/completions with the model's
template) and throughput. On a machine without a GPU this is SGLang's CPU engine with dayone's
workarounds (matrix/env_patches.py:sglang_cpu): the record says hardware=cpu-unsupported-path.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from probes import parity, serving
from probes.classify import status_for_class
from probes.engines.base import ServerEngine, openai_server_flags
from probes.modelinfo import incomplete_multimodal_copy
from probes.outcome import HarnessError, StageFailure, StageOutcome

CPU_LABEL = "cpu-unsupported-path"
# Lines that say SGLang's CPU path (not the model, not SGLang on its real target) stopped it:
# a platform feature the CPU lacks, dayone's sgl_kernel stub, a CUDA-only dependency.
CPU_PATH_LIMITS = re.compile(
    r"requires platform support|dayone-infra: sgl_kernel|'sgl_kernel' object has no attribute"
    r"|No module named '(cutlass|flashinfer|sgl_kernel\.\w+|deep_gemm|triton)'"
    r"|Torch not compiled with CUDA|Found no NVIDIA driver"
)
MODEL_IMPORT_ERROR = re.compile(r"Ignore import error when loading sglang\.srt\.models\.(\w+): (.*)")
IGNORED_IMPORT = re.compile(r"Ignore import error when loading")
# SGLang's own words when it serves a model on its transformers backend (resolve_transformers_arch
# in sglang/srt/model_loader/utils.py): the fallback, never green.
TRANSFORMERS_FALLBACK = re.compile(
    r"\S+ has no SGLang implementation, falling back to Transformers implementation"
    r"|Using Transformers backend"
)


def memory_caps(options: dict[str, Any]) -> list[str]:
    """Without caps SGLang sizes its pools from the machine's free memory: most of it for KV
    cache, and for hybrid (conv / Mamba) models millions of state slots (lfm2: 4.4 GB), which
    a probe's memory limit kills before the model ever runs."""
    return [
        "--max-total-tokens",
        str(int(options.get("max_total_tokens", 8192))),
        "--max-mamba-cache-size",
        str(int(options.get("max_mamba_cache_size", 64))),
    ]


def server_flags(
    model_dir: Path,
    port: int | str,
    dtype: str,
    window: int | None,
    options: dict[str, Any],
    trust_remote_code: bool,
) -> list[str]:
    """The server's flags, as the probe starts it and as its bare reproduction does (but the
    CPU device flag: the bare script adds it where it finds no GPU)."""
    return [
        "--model-path",
        str(model_dir),
        *openai_server_flags(port, dtype),
        *(["--context-length", str(window)] if window else []),
        "--random-seed",
        "0",
        *memory_caps(options),
        *(["--trust-remote-code"] if trust_remote_code else []),
    ]


def fallback_line(log_text: str) -> str | None:
    """The server log's line saying the model runs on SGLang's transformers fallback, or None."""
    for line in log_text.splitlines():
        m = TRANSFORMERS_FALLBACK.search(line)
        if m:
            return m.group(0)
    return None


def cpu_path_limit(log_text: str, architecture: str | None, models_dir: Path | None) -> str | None:
    """Why SGLang's CPU path, rather than the engine or the model, failed; None if it did not.

    Either a line from the list above, or: the module that implements the architecture did
    not import on this path (SGLang skips such modules and then calls the architecture
    unsupported, which would be a false red)."""
    lines = log_text.splitlines()
    for line in reversed(lines):
        # A module SGLang skipped ("Ignore import error ...") stopped nothing by itself.
        if CPU_PATH_LIMITS.search(line) and not IGNORED_IMPORT.search(line):
            return line.strip()[:500]
    if architecture and models_dir is not None:
        for m in MODEL_IMPORT_ERROR.finditer(log_text):
            source = models_dir / f"{m.group(1)}.py"
            try:
                implements = re.search(
                    rf"\bclass {re.escape(architecture)}\b", source.read_text(errors="replace")
                )
            except OSError:
                continue
            if implements:
                return (
                    f"sglang.srt.models.{m.group(1)} (which implements {architecture}) does "
                    f"not import on the CPU path: {m.group(2).strip()[:300]}"
                )
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def sglang_models_dir() -> Path | None:
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "srt" / "models"


def top_logprobs(step: list[list[Any]] | None, k: int) -> list[list[float]]:
    """SGLang's [[logprob, token_id, text], ...] -> [[id, logprob], ...] best first."""
    ranked = sorted(step or [], key=lambda e: -float(e[0]))
    return [[int(e[1]), float(e[0])] for e in ranked[:k]]


def completion_from_generate(
    prompt: str, prompt_ids: list[int], body: dict[str, Any], k: int
) -> dict[str, Any]:
    """One /generate answer in the shared completion format (transformers_engine's)."""
    meta = body.get("meta_info") or {}
    token_lps = meta.get("output_token_logprobs") or []
    token_ids = body.get("output_ids") or [int(e[1]) for e in token_lps]
    return {
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        "token_ids": [int(t) for t in token_ids],
        "text": body.get("text", ""),
        "top_logprobs": [top_logprobs(step, k) for step in meta.get("output_top_logprobs") or []],
    }


class Engine(ServerEngine):
    name = "sglang"
    package = "sglang"
    packages = ("torch", "transformers", "torchvision", "tokenizers", "xgrammar")
    server_log = "sglang-server.log"
    timeout_default = 420.0
    # SGLang's processes talk over IPC sockets in TMPDIR.
    tmp_prefix = "dayone-sglang-"

    def __init__(self, model_dir: Path, options: dict[str, Any], workdir: Path):
        super().__init__(model_dir, options, workdir)
        self.on_cpu = not self._has_gpu()

    @staticmethod
    def _has_gpu() -> bool:
        try:
            import torch

            return bool(torch.cuda.is_available())
        except Exception:
            return False

    def hardware(self) -> str:
        if not self.on_cpu:
            import torch

            return f"cuda:{torch.cuda.get_device_name(0)}"
        return CPU_LABEL  # SGLang's CPU path with dayone's workarounds, not a supported target

    # The server
    def server_argv(self, port: int) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "sglang.launch_server",
            *server_flags(
                self.model_dir, port, self.dtype, self.window, self.options, self.trust_remote_code
            ),
        ]
        if self.on_cpu:
            argv += ["--device", "cpu"]
        return argv

    def server_env(self) -> dict[str, str]:
        env = {
            "HF_HOME": str(self.workdir / "hf-home"),
            "HF_HUB_OFFLINE": "1",
            "TMPDIR": str(self.tmp_dir),
            "TRANSFORMERS_OFFLINE": "1",
            "SGLANG_DISABLE_REQUEST_LOGGING": "1",
            # A crashing server otherwise sleeps 5 s and tries py-spy and CUDA core dumps
            # before it exits; the probe keeps the log, which is the evidence we use.
            "SGLANG_PYSPY_DUMP_BEFORE_CRASH": "0",
            "SGLANG_CUDA_COREDUMP_BEFORE_CRASH": "0",
        }
        if self.on_cpu:
            env["SGLANG_USE_CPU_ENGINE"] = "1"
        return env

    def _raise_if_cpu_path(self, text: str) -> None:
        """On the CPU path, a failure of the path itself (a CUDA-only kernel, a platform
        feature, an sgl_kernel op with no CPU build) is `needs-gpu` naming it: no verdict, it
        says nothing about SGLang on its real target. TEXT: the server's log."""
        if not self.on_cpu:
            return
        archs = self.config.get("architectures") or [None]
        reason = cpu_path_limit(text, archs[0], sglang_models_dir())
        if reason:
            raise StageFailure(
                f"SGLang's CPU path cannot run this here ({CPU_LABEL}): {reason}",
                "not_on_cpu",
                status=status_for_class("not_on_cpu"),
            )

    def stage_server(self) -> serving.Server:
        """The server `load` started: every stage talks to it."""
        if self.server is None or self.server.proc.poll() is not None:
            raise HarnessError("stage needs `load` first in the same probe (the server)")
        return self.server

    # Stages
    def stage_load(self) -> StageOutcome:
        log_path = self.workdir / self.server_log
        try:
            server = self.start_server()
        except StageFailure as exc:
            log_text = _read_text(log_path)
            self._raise_if_cpu_path(log_text)
            incomplete = incomplete_multimodal_copy(self.model_dir, self.config, log_text)
            if incomplete:  # the load failed on a copy we could not make whole: no verdict
                raise HarnessError(f"no verdict: {incomplete}; load said: {exc}") from None
            raise
        status, info = serving.http_json(f"{server.base_url}/get_model_info", timeout=30)
        if status != 200 or not isinstance(info, dict):
            raise StageFailure(f"/get_model_info answered HTTP {status}: {str(info)[:300]}")
        archs = self.config.get("architectures") or []
        served = info.get("architectures") or []
        metrics = {
            "server_start_s": self.server_start_s,
            "dtype": self.dtype,
            "model_type": info.get("model_type"),
            "architecture": served[0] if served else None,
            "is_generation": info.get("is_generation"),
            "hardware_path": CPU_LABEL if self.on_cpu else "gpu",
        }
        if info.get("is_generation") is False:
            raise StageFailure(
                "the server loaded the model as a non-generation model",
                "unsupported_architecture",
                metrics=metrics,
            )
        message = None
        if archs and served and archs[0] != served[0]:
            message = f"served as {served[0]} (config says {archs[0]})"
        if self.on_cpu:
            message = (
                message + "; " if message else ""
            ) + "SGLang CPU path with dayone workarounds (not an upstream-supported target)"
        fallback = fallback_line(_read_text(log_path))
        metrics["transformers_fallback"] = fallback is not None
        if fallback:  # degraded for what it is; `slow` only where throughput measured it
            return StageOutcome(
                "degraded",
                metrics,
                f"ran on SGLang's transformers fallback: {fallback}; {message}",
                "transformers_fallback",
            )
        return StageOutcome(metrics=metrics, message=message)

    def stage_generate(self) -> StageOutcome:
        server = self.stage_server()
        ref_ids = parity.reference_prompt_ids(self.options)
        completions, new_tokens = [], 0
        t0 = time.perf_counter()
        for prompt in self.prompts:
            payload: dict[str, Any] = {
                "sampling_params": {
                    "temperature": 0.0,
                    "max_new_tokens": self.max_new_tokens,
                    "min_new_tokens": self.max_new_tokens,
                    "ignore_eos": True,
                },
                "return_logprob": True,
                "top_logprobs_num": self.top_k,
                "logprob_start_len": -1,
            }
            if prompt in ref_ids:
                payload["input_ids"] = ref_ids[prompt]
            else:
                payload["text"] = prompt
            status, body = serving.http_json(f"{server.base_url}/generate", payload, timeout=300)
            if status != 200 or not isinstance(body, dict):
                print(server.log_tail(), flush=True)
                raise StageFailure(f"/generate answered HTTP {status}: {str(body)[:300]}")
            prompt_ids = ref_ids.get(prompt) or (body.get("meta_info") or {}).get("input_ids") or []
            c = completion_from_generate(prompt, list(prompt_ids), body, self.top_k)
            if any(not math.isfinite(lp) for step in c["top_logprobs"] for _, lp in step):
                raise StageFailure("dayone-wrong-output: non-finite logprobs", "wrong_output")
            new_tokens += len(c["token_ids"])
            completions.append(c)
        elapsed = time.perf_counter() - t0
        return self.generated(completions, new_tokens, elapsed)
