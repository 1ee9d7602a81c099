# Bare llama.cpp stages (template; see common.py): the release's own converter, then
# llama-cpp-python. Needs: MODEL, CONVERTER, GGUF_OUT, OUTTYPE, CONVERT_ARGS,
# PRETOKENIZER_FALLBACK, N_CTX, PROMPT_IDS, EOS_IDS, PROMPTS, MAX_NEW_TOKENS, TOP_K.


def convert():
    sys.path[:0] = [CONVERTER, os.path.join(CONVERTER, "gguf-py")]
    if PRETOKENIZER_FALLBACK:  # dayone's fixtures only: their tokenizer's hash no release knows
        import conversion.base as base

        original = base.TextModel.get_vocab_base_pre

        def get_vocab_base_pre(self, tokenizer):
            try:
                return original(self, tokenizer)
            except NotImplementedError as exc:
                if "pre-tokenizer" not in str(exc):
                    raise
                return PRETOKENIZER_FALLBACK

        base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    import runpy

    script = os.path.join(CONVERTER, "convert_hf_to_gguf.py")
    argv, sys.argv = sys.argv, [script, MODEL, "--outfile", GGUF_OUT, "--outtype", OUTTYPE,
                                *CONVERT_ARGS]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            fail(f"the converter exited with status {exc.code}")
    sys.argv = argv
    with open(GGUF_OUT, "rb") as fh:
        head = fh.read(24)
    if head[:4] != b"GGUF" or int.from_bytes(head[8:16], "little") == 0:
        fail("the converter wrote a GGUF with no tensors")


def load():
    import llama_cpp

    return llama_cpp.Llama(model_path=GGUF_OUT, n_ctx=N_CTX, n_batch=N_CTX, logits_all=True,
                           n_threads=1, n_threads_batch=1, seed=0, n_gpu_layers=0, verbose=True)


def generate(llm):
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
            best = np.argsort(-logprobs, kind="stable")[:TOP_K]
            top.append([[int(i), float(logprobs[i])] for i in best])
            logits[[e for e in eos if 0 <= e < logits.shape[0]]] = -np.inf
            token_ids.append(int(np.argmax(logits)))
            llm.eval([token_ids[-1]])
        completions.append({"prompt": prompt, "prompt_ids": list(ids), "token_ids": token_ids,
                            "top_logprobs": top})
    return completions


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
