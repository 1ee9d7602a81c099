# Bare SGLang stages (template; see common.py): everything through its own server. Needs:
# SERVER_ARGS, PROMPT_IDS, PROMPTS, MAX_NEW_TOKENS, TOP_K.


import tempfile

# SGLang's IPC sockets live in TMPDIR; a per-run dir can be deeper than a socket path may be.
os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="dayone-bare-sglang-", dir="/tmp")


def on_cpu():
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:
        return True


def run(stage):
    device = ["--device", "cpu"] if on_cpu() else []
    server = Server([sys.executable, "-m", "sglang.launch_server", *SERVER_ARGS, *device],
                    "/health", 420, env={"SGLANG_USE_CPU_ENGINE": "1"} if device else {})
    status, info = http_json(server.base + "/get_model_info", timeout=30)
    say(f"/get_model_info: {status} {info}")
    if status != 200 or not isinstance(info, dict):
        server.stop()
        fail(f"/get_model_info answered HTTP {status}: {str(info)[:300]}")
    if info.get("is_generation") is False:
        server.stop()
        fail("the server loaded the model as a non-generation model")
    if stage == "load":
        server.stop()
        passed()
    if stage in ("generate", "parity"):
        completions = []
        for prompt in PROMPTS:
            payload = {"sampling_params": {"temperature": 0.0, "max_new_tokens": MAX_NEW_TOKENS,
                                           "min_new_tokens": MAX_NEW_TOKENS, "ignore_eos": True},
                       "return_logprob": True, "top_logprobs_num": TOP_K, "logprob_start_len": -1}
            if prompt in PROMPT_IDS:
                payload["input_ids"] = PROMPT_IDS[prompt]
            else:
                payload["text"] = prompt
            status, body = http_json(server.base + "/generate", payload)
            if status != 200 or not isinstance(body, dict):
                refused(server, "/generate", status, body)
            meta = body.get("meta_info") or {}
            token_ids = [int(t) for t in body.get("output_ids")
                         or [e[1] for e in meta.get("output_token_logprobs") or []]]
            tokens_line(f"{prompt!r} ->", token_ids)
            top = [[[int(e[1]), float(e[0])] for e in sorted(step or [], key=lambda e: -float(e[0]))
                    [:TOP_K]] for step in meta.get("output_top_logprobs") or []]
            if len(token_ids) < MAX_NEW_TOKENS:
                server.stop()
                fail(f"dayone-wrong-output: generated {len(token_ids)} tokens, expected "
                     f"{MAX_NEW_TOKENS}")
            completions.append({"prompt": prompt, "prompt_ids": PROMPT_IDS.get(prompt)
                                or meta.get("input_ids") or [], "token_ids": token_ids,
                                "top_logprobs": top})
        server.stop()
        if stage == "parity":
            check_parity(completions)
        passed()
    served_check(server, stage)
