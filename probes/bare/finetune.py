# Bare fine-tuning (template; see common.py): PEFT LoRA or one TRL SFT step, as recipes do it.
# Needs: ENGINE, MODEL, TRAIN_TEXTS, CHAT_SAMPLE, STEPS, LEARNING_RATE, LORA_RANK,
# ATTENTION_PROJECTIONS, MERGE_EXACT, TRUST_REMOTE_CODE.
import math


def load_base(dtype="auto"):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CLM, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as VLM)

    kind = AutoConfig.from_pretrained(MODEL, trust_remote_code=TRUST_REMOTE_CODE).model_type
    auto = AutoModelForImageTextToText if kind not in CLM and kind in VLM else AutoModelForCausalLM
    return auto.from_pretrained(MODEL, dtype=dtype, trust_remote_code=TRUST_REMOTE_CODE)


def tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL, trust_remote_code=TRUST_REMOTE_CODE)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def lora(targets, tok):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    batch = tok(list(TRAIN_TEXTS), return_tensors="pt", padding=True)
    batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    base = load_base()
    dtype = str(base.dtype).replace("torch.", "")
    model = get_peft_model(base, LoraConfig(
        r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.0, target_modules=targets,
        task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=LEARNING_RATE)
    model.train()
    losses = []
    for _ in range(STEPS):
        loss = model(**batch, labels=labels).loss
        losses.append(float(loss.detach().float()))
        if not math.isfinite(losses[-1]):
            fail(f"dayone-wrong-output: LoRA {targets}: non-finite loss {losses}")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    say(f"LoRA {targets}: losses {losses}")
    if len(losses) > 1 and not min(losses[1:]) < losses[0]:  # as the probe: below the first at any step
        fail(f"dayone-wrong-output: LoRA {targets}: loss did not decrease")
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare-adapter")
    model.eval()
    model.save_pretrained(folder)
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        trained = model(**batch).logits.float()
        reloaded = PeftModel.from_pretrained(load_base(), folder).eval()
        adapter = reloaded(**batch).logits.float()
        with reloaded.disable_adapter():
            bare = reloaded(**batch).logits.float()
        merged = reloaded.merge_and_unload()(**batch).logits.float()
        scale = float(adapter[mask].abs().max()) or 1.0
        noise, exact = 0.0, 0.0
        if dtype != "float32":  # the merge in float32 (exact arithmetic) and the dtype's noise
            exact_model = PeftModel.from_pretrained(load_base("float32"), folder).eval()
            adapter32 = exact_model(**batch).logits.float()
            merged32 = exact_model.merge_and_unload()(**batch).logits.float()
            noise = float((adapter - adapter32)[mask].abs().max()) / scale
            exact = float((merged32 - adapter32)[mask].abs().max()) / scale
    # the probe's tolerances (probes/engines/peft_engine.py: logits_tolerance, adapter_problem)
    floor = 2e-2 if dtype in ("bfloat16", "float16") else MERGE_EXACT
    effect = float((adapter - bare)[mask].abs().max()) / scale
    say(f"LoRA {targets}: {dtype} noise {noise:.3g}, adapter effect {effect:.3g}")
    if effect <= floor:
        fail(f"dayone-wrong-output: LoRA {targets}: the trained adapter does not change the output")
    drift = float((merged - adapter)[mask].abs().max()) / scale
    say(f"LoRA {targets}: merged in {dtype}: {drift:.3g} from the adapter; in float32: {exact:.3g}")
    # merged in bfloat16 beyond its noise is the probe's `degraded`, not a red: only float32 decides
    checks = (("reloaded", trained - adapter, dtype, floor),
              ("merged", exact if dtype != "float32" else drift, "float32", MERGE_EXACT))
    for what, value, kind, limit in checks:
        value = value if isinstance(value, float) else float(value[mask].abs().max()) / scale
        if value > limit:
            fail(f"dayone-wrong-output: LoRA {targets}: {what} model's logits differ by {value:.3g} in {kind}")


def run(stage):
    tok = tokenizer()
    if ENGINE == "peft":
        lora("all-linear", tok)
        present = {n.rsplit(".", 1)[-1] for n, _ in load_base().named_modules()}
        attention = [n for n in ATTENTION_PROJECTIONS if n in present]
        if attention:
            lora(attention, tok)
        passed()
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bare-sft")
    # as the probe (trl_engine.sft_sample): plain text where the tokenizer has no chat template,
    # no system turn where the template refuses one (Gemma's)
    def renders(messages):
        try:
            tok.apply_chat_template(messages, tokenize=False)
            return True
        except Exception:
            return False
    turns = [dict(m) for m in CHAT_SAMPLE]
    chat = [m for m in turns if m["role"] != "system"]
    if tok.chat_template is not None and not renders(turns) and renders(chat):
        turns = chat
    sample = ({"messages": turns} if tok.chat_template is not None
              else {"text": "\n".join(m["content"] for m in CHAT_SAMPLE)})
    trainer = SFTTrainer(
        model=load_base(), train_dataset=Dataset.from_list([sample] * 2), processing_class=tok,
        args=SFTConfig(output_dir=out, max_steps=STEPS, per_device_train_batch_size=2,
                       learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
                       disable_tqdm=True, max_length=256, dataloader_num_workers=0, seed=0,
                       # as the probe: a bf16 copy on a machine without a GPU trains on the CPU
                       use_cpu=not torch.cuda.is_available()),
        peft_config=LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.0,
                               target_modules="all-linear", task_type="CAUSAL_LM"))
    result = trainer.train()
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    say(f"SFT: {result.global_step} steps, losses {losses}")
    if result.global_step < STEPS or not losses or not all(math.isfinite(v) for v in losses):
        fail(f"dayone-wrong-output: SFT ran {result.global_step} of {STEPS} steps, losses {losses}")
    passed()
