"""What every engine module builds on: EngineBase, and ServerEngine for the engines with an
OpenAI-compatible server. Standard library only."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from probes import features, serving, throughput, workload
from probes.modelinfo import model_config
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


# The config keys a position limit goes by, as vLLM and SGLang read them (the smallest wins).
POSITION_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
    "n_ctx",
)


def context_window(config: dict[str, Any], cap: int = 4096) -> int | None:
    """The window to ask a server for: the config's own limit, capped (a 128k window would
    reserve a KV cache this machine does not have). None where the config states none: the
    engine then derives its own. Asking for more than the config states is refused by vLLM and
    SGLang, a red of ours (GPT-2-style configs say n_positions)."""
    text = config.get("text_config")
    scope = text if isinstance(text, dict) else config
    found = [
        v
        for k in POSITION_KEYS
        for v in [scope.get(k)]
        if isinstance(v, int) and not isinstance(v, bool) and v > 0
    ]
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

    # Description of the environment
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

    # Shared stage helpers
    completions: list[dict[str, Any]] | None = None
    # Every stage this probe will run (set by the child): a server started for one stage can
    # be started with what later stages need.
    requested_stages: tuple[str, ...] = ()

    def generated(self, completions: list[dict[str, Any]], new_tokens: int, elapsed: float) -> StageOutcome:
        """The generate outcome every engine reports: the forced length checked, the
        completions kept for parity."""
        expected = self.max_new_tokens * len(self.prompts)
        if new_tokens < expected:
            raise StageFailure(
                f"dayone-wrong-output: generated {new_tokens} tokens, expected {expected}", "wrong_output"
            )
        self.completions = completions
        return StageOutcome(
            metrics={
                "new_tokens": new_tokens,
                "prompts": len(self.prompts),
                "generate_s": round(elapsed, 4),
                "output_tok_s": round(new_tokens / elapsed, 2) if elapsed else None,
            },
            output={"completions": completions},
        )

    def stage_parity(self) -> StageOutcome:
        from probes import parity

        if self.completions is None:
            raise HarnessError("parity needs `generate` first in the same probe")
        return parity.parity_stage(self.options, self.completions, self.top_k)

    # Stages
    def run_stage(self, stage: str) -> StageOutcome:
        method = getattr(self, f"stage_{stage}", None)
        if method is None:
            raise HarnessError(f"engine {self.name} has no stage {stage!r}")
        return method()

    def close(self) -> None:
        """Free the engine (models, servers). Must be safe to call twice."""


SERVED_NAME = "dayone-model"  # the name a server engine serves the model under


def openai_server_flags(port: int | str, dtype: str) -> list[str]:
    """The flags vLLM's and SGLang's OpenAI servers both spell alike: the name clients ask for,
    loopback only, the port (a `{port}` placeholder in a bare script), the dtype."""
    return ["--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype]


class ServerEngine(EngineBase):
    """An engine with an OpenAI-compatible server. The base owns the model's config (read once,
    probes/modelinfo.py), the dtype and window asked of the server, a short per-run temp dir,
    the server's lifecycle, and the serving stages (serve, the features, throughput: one
    implementation each, in probes/features.py and probes/throughput.py). A subclass says its
    argv (`server_argv`), its env (`server_env`), and gives its load verdict."""

    served_name: str | None = SERVED_NAME  # each request's `model` (None: none sent)
    server_log: str = "server.log"
    ready_path: str = "/health"
    timeout_option: str = "server_timeout_s"  # the option that overrides timeout_default
    timeout_default: float = 300.0
    tool_parser: tuple[str, ...] = ()  # the server's tool-call parser flags, recorded
    tmp_prefix: str | None = None  # a short per-run temp dir (IPC sockets), where set
    records_env_patches: bool = True  # describe() fingerprints dayone's env patches

    server: serving.Server | None = None
    server_start_s: float | None = None

    def __init__(self, model_dir: Path, options: dict[str, Any], workdir: Path):
        super().__init__(model_dir, options, workdir)
        self.config = model_config(self.model_dir)  # {} when unreadable: the engine says so
        self.dtype = str(options.get("dtype") or model_dtype(self.config))
        self.window = (
            int(options["max_model_len"]) if options.get("max_model_len") else context_window(self.config)
        )
        # A socket path over 107 bytes fails to bind, and per-run work dirs can be deep.
        # /tmp where writable (a container's read-only root is not: TMPDIR is used there).
        short = "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else None
        self.tmp_dir = tempfile.mkdtemp(prefix=self.tmp_prefix, dir=short) if self.tmp_prefix else None

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.records_env_patches:
            info["packages"].update(env_patches_fingerprint())
        return info

    # What each engine says
    def server_argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def server_env(self) -> dict[str, str]:
        return {}

    def before_server(self) -> None:
        """Free what the server would hold twice (an in-process model)."""

    def server_ready(self, server: serving.Server) -> None:
        """More waiting once ready_path answers, where the engine needs it."""

    def server_metrics(self) -> dict[str, Any]:
        """The engine's own facts about its server, recorded by serve and throughput."""
        return {}

    def serve_request(self) -> dict[str, Any]:
        """features.stage_serve's arguments: the default request is the workload's length,
        forced (random weights like EOS), checked against transformers' template tokens."""
        return {
            "max_tokens": self.max_new_tokens,
            "params": {"min_tokens": self.max_new_tokens, "ignore_eos": True},
        }

    # The server
    def start_server(self) -> serving.Server:
        """The running server, started (once) where there is none."""
        if self.server is not None and self.server.proc.poll() is None:
            return self.server
        self.before_server()
        port = serving.free_port()
        t0 = time.perf_counter()
        self.server = serving.start_server(
            self.server_argv(port),
            port,
            self.workdir / self.server_log,
            ready_path=self.ready_path,
            timeout_s=float(self.options.get(self.timeout_option, self.timeout_default)),
            env=self.server_env(),
        )
        self.server_ready(self.server)
        self.server_start_s = round(time.perf_counter() - t0, 3)
        return self.server

    def stage_server(self) -> serving.Server:
        """The server a serving stage talks to: started on first need."""
        return self.start_server()

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    # The serving stages (one implementation for every server)
    def stage_serve(self) -> StageOutcome:
        server = self.stage_server()
        return features.stage_serve(
            server,
            self.model_dir,
            model=self.served_name,
            metrics={"server_start_s": self.server_start_s, **self.server_metrics()},
            **self.serve_request(),
        )

    def stage_chat_template(self) -> StageOutcome:
        return features.stage_chat_template(self.stage_server(), self.model_dir)

    def stage_tool_call(self) -> StageOutcome:
        return features.stage_tool_call(
            self.stage_server(), self.model_dir, parser=" ".join(self.tool_parser) or None
        )

    def stage_json_schema(self) -> StageOutcome:
        return features.stage_json_schema(self.stage_server(), self.model_dir)

    def stage_long_context(self) -> StageOutcome:
        return features.stage_long_context(
            self.stage_server(), self.model_dir, window=self.window, config=self.config
        )

    def stage_throughput(self) -> StageOutcome:
        """Stops the server (the reference gets the machine to itself): the last stage."""
        server = self.stage_server()
        try:
            outcome = throughput.stage(
                server.base_url,
                self.served_name or "",
                self.model_dir,
                self.options,
                before_reference=self.stop_server,
            )
        finally:
            self.stop_server()
        outcome.metrics.update(self.server_metrics())
        return outcome

    def close(self) -> None:
        self.stop_server()
        if self.tmp_dir:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
