# Bare vLLM stages (template; see common.py): in-process LLM for load/generate/parity, the
# OpenAI server for the rest. Needs: MODEL, DTYPE, WINDOW, SERVER_ARGS, PROMPT_IDS, PROMPTS,
# MAX_NEW_TOKENS, TOP_K, TRUST_REMOTE_CODE; for lora, LORA_ADAPTER (PEFT's adapter), REFERENCE_PATH
# being the merged model's reference.
import tempfile

# vLLM's IPC sockets live under this; a per-run dir can be deeper than a socket path may be.
os.environ.setdefault("VLLM_RPC_BASE_PATH", tempfile.mkdtemp(prefix="dayone-bare-vllm-",
                                                             dir="/tmp"))


def generate():
    import math

    from vllm import LLM, SamplingParams

    lora, served = {}, None
    if STAGE == "lora":
        import json

        from vllm.lora.request import LoRARequest

        with open(os.path.join(LORA_ADAPTER, "adapter_config.json")) as f:
            rank = int(json.load(f)["r"])
        lora = {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1}
        served = LoRARequest("dayone-adapter", 1, LORA_ADAPTER)
    llm = LLM(model=MODEL, dtype=DTYPE, enforce_eager=True, max_model_len=WINDOW, seed=0,
              trust_remote_code=TRUST_REMOTE_CODE, **lora)
    say(f"loaded: {llm.llm_engine.model_config.architecture}")
    if STAGE == "load":
        passed()
    params = SamplingParams(temperature=0.0, max_tokens=MAX_NEW_TOKENS,
                            min_tokens=MAX_NEW_TOKENS, ignore_eos=True, logprobs=TOP_K, seed=0)
    inputs = [{"prompt_token_ids": PROMPT_IDS[p]} if p in PROMPT_IDS else p for p in PROMPTS]
    completions = []
    for prompt, out in zip(PROMPTS, llm.generate(inputs, params, use_tqdm=False,
                                                 lora_request=served)):
        choice = out.outputs[0]
        steps = [[[int(t), float(lp.logprob)] for t, lp in sorted(
            (step or {}).items(), key=lambda kv: (kv[1].rank or math.inf, -kv[1].logprob))[:TOP_K]]
            for step in (choice.logprobs or [])]
        if any(not math.isfinite(lp) for step in steps for _, lp in step):
            fail("dayone-wrong-output: non-finite logprobs")
        token_ids = [int(t) for t in choice.token_ids]
        tokens_line(f"{prompt!r} ->", token_ids)
        if len(token_ids) < MAX_NEW_TOKENS:
            fail(f"dayone-wrong-output: generated {len(token_ids)} tokens, expected "
                 f"{MAX_NEW_TOKENS}")
        completions.append({"prompt": prompt, "prompt_ids": list(out.prompt_token_ids or []),
                            "token_ids": token_ids, "top_logprobs": steps})
    return completions


def run(stage):
    if stage in ("load", "generate", "parity", "lora"):
        completions = generate()
        if stage in ("parity", "lora"):
            check_parity(completions)
        passed()
    server = Server([sys.executable, "-m", "vllm.entrypoints.openai.api_server", *SERVER_ARGS],
                    "/health", 300, env={"VLLM_ENABLE_V1_MULTIPROCESSING": "1"})
    deadline = time.monotonic() + 60
    while http_json(server.base + "/v1/models", timeout=5)[0] != 200:
        if time.monotonic() > deadline:
            server.stop()
            fail("server /health ok but /v1/models never answered")
        time.sleep(0.3)
    served_check(server, stage)
