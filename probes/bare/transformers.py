# Bare transformers stages (template; see common.py). Needs: MODEL, DTYPE, PROMPTS,
# MAX_NEW_TOKENS, TOP_K, TRUST_REMOTE_CODE.


def load():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(MODEL, trust_remote_code=TRUST_REMOTE_CODE)
    model, info = AutoModelForCausalLM.from_pretrained(
        MODEL, dtype=DTYPE or "auto", output_loading_info=True,
        trust_remote_code=TRUST_REMOTE_CODE)
    missing = [k for k in info.get("missing_keys", ()) if k]
    if missing:
        fail(f"missing tensors re-initialised at random: {', '.join(sorted(missing)[:5])}")
    say(f"loaded {type(model).__name__} in {model.dtype}")
    return tok, model.eval()


def generate(tok, model):
    import torch

    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MAX_NEW_TOKENS,
                                 output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=tok.pad_token_id or 0)
        new = out.sequences[0, ids.shape[1]:].tolist()
        tokens_line(f"{prompt!r} ->", new)
        if any(not torch.isfinite(torch.log_softmax(l[0].float(), -1)).all() for l in out.logits):
            fail("dayone-wrong-output: non-finite logits")
        if len(new) < MAX_NEW_TOKENS:
            fail(f"dayone-wrong-output: generated {len(new)} tokens, expected {MAX_NEW_TOKENS}")


def run(stage):
    tok, model = load()
    if stage == "load":
        passed()
    if stage == "generate":
        generate(tok, model)
        passed()
    no_verdict(f"no bare check for stage {stage!r}")
