"""TRL: one SFTTrainer step on a chat-formatted sample (LoRA on all linear layers).

What a fine-tuning recipe does first with a new model: format the chat with the model's own
template, tokenize, train. It breaks where the template does not render
(`tokenizer_or_template`), where the model needs inputs the trainer does not pass
(`missing_inputs`), where PEFT cannot wrap a module (`unsupported_layer`). The library's own
exceptions reach the log and are classified there. Heavy imports inside methods only.
"""

from __future__ import annotations

import math
import time
from typing import Any

from probes.engines.base import EngineBase, torch_hardware
from probes.outcome import StageFailure, StageOutcome
from probes.engines.peft_engine import (
    LORA_RANK,
    device_name,
    load_base,
    load_tokenizer,
    peak_memory_mb,
)

# One conversation in the shape SFT datasets use ("messages"), every role once.
CHAT_SAMPLE: tuple[dict[str, str], ...] = (
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello in one word."},
    {"role": "assistant", "content": "Hello! How can I help you today?"},
)
SFT_STEPS = 1
SFT_BATCH = 2


def sft_sample(has_chat_template: bool, takes_system: bool = True) -> dict[str, Any]:
    """One training row as a recipe writes it: the conversation where the tokenizer has a chat
    template (without the system turn where the template refuses one); plain text where it has
    none (a base model's release ships none, and SFT on it trains on text: a "messages" row
    there fails in the template, which is not TRL's red)."""
    if has_chat_template:
        return {"messages": [dict(m) for m in CHAT_SAMPLE if takes_system or m["role"] != "system"]}
    return {"text": "\n".join(m["content"] for m in CHAT_SAMPLE)}


def template_takes_system(tok: Any) -> bool:
    """Whether the tokenizer's chat template renders a system turn. Gemma's and Gemma 2's
    release templates refuse one by design (`System role not supported`), so a recipe for them
    sends none. A template that fails without the system turn too says True: the run then
    shows the template's failure as it is."""
    try:
        tok.apply_chat_template(list(CHAT_SAMPLE), tokenize=False)
        return True
    except Exception:
        pass
    try:
        tok.apply_chat_template([m for m in CHAT_SAMPLE if m["role"] != "system"], tokenize=False)
    except Exception:
        return True
    return False


class Engine(EngineBase):
    name = "trl"
    package = "trl"
    packages = ("peft", "transformers", "torch", "accelerate", "datasets", "tokenizers")

    def hardware(self) -> str:
        return torch_hardware(super().hardware())

    def stage_finetune(self) -> StageOutcome:
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from trl import SFTConfig, SFTTrainer

        torch.set_num_threads(int(self.options.get("threads", 1)))
        steps = int(self.options.get("sft_steps", SFT_STEPS))
        tok = load_tokenizer(self.model_dir, self.trust_remote_code)
        model = load_base(self.model_dir, self.trust_remote_code)
        templated = tok.chat_template is not None
        sample = sft_sample(templated, templated and template_takes_system(tok))
        data = Dataset.from_list([sample] * SFT_BATCH)
        args = SFTConfig(
            output_dir=str(self.workdir / "sft"),
            max_steps=steps,
            per_device_train_batch_size=SFT_BATCH,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            max_length=256,
            dataloader_num_workers=0,
            use_cpu=device_name() == "cpu",
            seed=0,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=tok,
            peft_config=LoraConfig(
                r=LORA_RANK,
                lora_alpha=2 * LORA_RANK,
                lora_dropout=0.0,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
        t0 = time.perf_counter()
        result = trainer.train()
        elapsed = time.perf_counter() - t0
        losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
        metrics: dict[str, Any] = {
            "sft_steps": int(result.global_step),
            "sft_loss": round(losses[-1], 5) if losses else None,
            "sft_steps_per_s": round(result.global_step / elapsed, 3) if elapsed else None,
            "sft_tokens": next(
                (int(e["num_tokens"]) for e in reversed(trainer.state.log_history) if "num_tokens" in e), None
            ),
            "dtype": str(model.dtype).replace("torch.", ""),
            "device": device_name(),
            "sft_format": next(iter(sample)),
            "sft_system_turn": any(m["role"] == "system" for m in sample.get("messages", [])),
        }
        if result.global_step < steps or not losses:
            raise StageFailure(
                f"dayone-wrong-output: SFT ran {result.global_step} of {steps} steps",
                "wrong_output",
                metrics=metrics,
            )
        if not all(math.isfinite(v) for v in losses):
            raise StageFailure(
                f"dayone-wrong-output: SFT loss not finite: {losses}", "wrong_output", metrics=metrics
            )
        adapter_dir = self.workdir / "sft-adapter"
        trainer.save_model(str(adapter_dir))
        if not (adapter_dir / "adapter_config.json").exists():
            raise StageFailure("dayone-wrong-output: SFT saved no adapter", "wrong_output", metrics=metrics)
        metrics.update(peak_memory_mb())
        return StageOutcome(metrics=metrics)
