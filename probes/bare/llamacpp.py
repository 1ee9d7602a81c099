# Bare llama.cpp stages (template; see common.py): the release's own converter, then
# llama-cpp-python. Needs: MODEL, CONVERTER, GGUF_OUT, OUTTYPE, CONVERT_ARGS,
# PRETOKENIZER_FALLBACK, N_CTX, PROMPT_IDS, EOS_IDS, PROMPTS, MAX_NEW_TOKENS, TOP_K; quantize
# also QUANT_TYPES (probes/quantization.json's types, as dicts), QUANT_DIR, QUANTIZE_INPUT.


def convert():
    sys.path[:0] = [CONVERTER, os.path.join(CONVERTER, "gguf-py")]
    import runpy

    script = os.path.join(CONVERTER, "convert_hf_to_gguf.py")
    argv, sys.argv = sys.argv, [script, MODEL, "--outfile", GGUF_OUT, "--outtype", OUTTYPE,
                                *CONVERT_ARGS]
    module = None
    if PRETOKENIZER_FALLBACK:  # dayone's fixtures only: their tokenizer's hash no release knows
        if os.path.exists(os.path.join(CONVERTER, "conversion", "base.py")):
            import conversion.base as base

            text_model = base.TextModel
        else:  # llama-cpp-python 0.3.21 and older: the models live in the script itself
            import importlib.util

            spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", script)
            module = importlib.util.module_from_spec(spec)
            sys.modules["convert_hf_to_gguf"] = module
            spec.loader.exec_module(module)
            text_model = module.TextModel
        original = text_model.get_vocab_base_pre

        def get_vocab_base_pre(self, tokenizer):
            try:
                return original(self, tokenizer)
            except NotImplementedError as exc:
                if "pre-tokenizer" not in str(exc):
                    raise
                return PRETOKENIZER_FALLBACK

        text_model.get_vocab_base_pre = get_vocab_base_pre
    try:
        if module is not None:
            module.main()
        else:
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            fail(f"the converter exited with status {exc.code}")
    sys.argv = argv
    with open(GGUF_OUT, "rb") as fh:
        head = fh.read(24)
    if head[:4] != b"GGUF" or int.from_bytes(head[8:16], "little") == 0:
        fail("the converter wrote a GGUF with no tensors")


def load(path=None):
    import llama_cpp

    return llama_cpp.Llama(model_path=path or GGUF_OUT, n_ctx=N_CTX, n_batch=N_CTX, logits_all=True,
                           n_threads=1, n_threads_batch=1, seed=0, n_gpu_layers=0, verbose=True)


def generate(llm, top_k=None):
    import numpy as np

    eos = EOS_IDS or [llm.token_eos()]
    completions = []
    for prompt in PROMPTS:
        ids = PROMPT_IDS.get(prompt) or llm.tokenize(prompt.encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(list(ids))
        token_ids, top = [], []
        for _ in range(MAX_NEW_TOKENS):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            peak = logits.max()
            logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))
            if not np.isfinite(logprobs).all():
                fail("dayone-wrong-output: non-finite logits")
            best = np.argsort(-logprobs, kind="stable")[:top_k or TOP_K]
            top.append([[int(i), float(logprobs[i])] for i in best])
            logits[[e for e in eos if 0 <= e < logits.shape[0]]] = -np.inf
            token_ids.append(int(np.argmax(logits)))
            llm.eval([token_ids[-1]])
        completions.append({"prompt": prompt, "prompt_ids": list(ids), "token_ids": token_ids,
                            "top_logprobs": top})
    return completions


def quantize():
    """llama.cpp's own quantizer to each type, each judged against the unquantized GGUF by the
    probe's rule with the type's tolerance: within it, drift (exit 0); beyond it, exit 1."""
    import ctypes

    import llama_cpp

    top_k = max([TOP_K, *(t["top_k"] for t in QUANT_TYPES)])
    llm = load()
    baseline = generate(llm, top_k)
    llm.close()
    worst = None
    for qtype in QUANT_TYPES:
        out = os.path.join(QUANT_DIR, f"bare-model-{qtype['name']}.gguf")
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_" + qtype["ftype"])
        params.nthread = 1
        rc = llama_cpp.llama_model_quantize((QUANTIZE_INPUT or GGUF_OUT).encode(),
                                            out.encode(), ctypes.byref(params))
        if rc != 0 or not os.path.exists(out):
            fail(f"llama_model_quantize to {qtype['name']} returned {rc}")
        quantized = load(out)
        completions = generate(quantized, top_k)
        quantized.close()
        for ref, got in zip(baseline, completions):
            print(f"{qtype['name']} prompt {ref['prompt']!r}", flush=True)
            tokens_line("  quantized  ", got["token_ids"])
            tokens_line("  unquantized", ref["token_ids"])
        result = check_logprobs_close(baseline, completions, top_k=qtype["top_k"],
                                      max_logprob_gap=qtype["max_logprob_gap"], noise=0.0)
        say(f"{qtype['name']}: {result.status}: {result.message}")
        if result.status == "fail":
            worst = worst or (f"beyond the {qtype['name']} tolerance (top-{qtype['top_k']}, "
                              f"{qtype['max_logprob_gap']:g} nats): {result.message}")
    if worst:
        fail(worst)
    passed("every type within its tolerance")


def run(stage):
    convert()
    if stage == "convert":
        passed(f"wrote {GGUF_OUT}")
    if stage == "serve":
        server = Server([sys.executable, "-m", "llama_cpp.server", "--model", GGUF_OUT,
                         "--host", "127.0.0.1", "--port", "{port}", "--n_ctx", str(N_CTX),
                         "--n_threads", "1", "--n_threads_batch", "1"], "/v1/models", 120)
        status, body = server.chat([dict(m) for m in CHAT_MESSAGES], max_tokens=8,
                                   logit_bias={str(e): -100 for e in EOS_IDS})
        server.stop()
        if status != 200:
            server.show_log()
            fail(f"chat completion answered HTTP {status}: {str(body)[:500]}")
        if not answered(body):
            fail(f"dayone-wrong-output: empty or malformed answer: {str(body)[:500]}")
        passed()
    if stage == "quantize":
        quantize()
    llm = load()
    if stage == "load":
        passed()
    completions = generate(llm)
    for c in completions:
        tokens_line(f"{c['prompt']!r} ->", c["token_ids"])
    if stage == "generate":
        passed()
    if stage == "parity":
        check_parity(completions)
    no_verdict(f"no bare check for stage {stage!r}")
