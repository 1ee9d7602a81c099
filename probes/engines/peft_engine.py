"""PEFT: can the model be LoRA fine-tuned on day one? Stage `finetune`.

Two LoRA runs, each on a fresh copy of the model: all linear layers (`target_modules=
"all-linear"`) and the attention projections only (by name, the way people write it; that is
where Gemma 4's vision/audio towers broke: `q_proj` there is a Gemma4ClippableLinear that PEFT
cannot wrap). Each run takes a few optimizer steps on a tiny fixed batch and must give finite,
decreasing loss; then the adapter is saved, reloaded onto a fresh base, merged, and the merged
model's logits must equal the adapter model's (and differ from the bare base: an adapter that
does nothing would pass the merge check trivially).

Failures are the library's own exceptions, classified from the log: a module PEFT cannot wrap
(`unsupported_layer`), inputs the model demands that the loop does not pass (`missing_inputs`).
Heavy imports (torch, transformers, peft) happen inside methods only (child side).
"""

from __future__ import annotations

import math
import resource
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from probes import workload
from probes.engines.base import EngineBase, torch_hardware
from probes.outcome import StageFailure, StageOutcome
from probes.outcome import one_line

# Attention projection names as fine-tuning recipes write them (last component of the module
# path). Only the names the model has are passed, like a user who read the model's code.
ATTENTION_PROJECTIONS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "qkv_proj",
    "query_key_value",
    "Wqkv",
    "c_attn",
)

# A tiny fixed batch: the shared prompts plus text the fixtures' tokenizer knows.
TRAIN_TEXTS: tuple[str, ...] = (
    *workload.PROMPTS,
    "You are a helpful assistant. Say hello in one word. Hello! How can I help you today?",
)

STEPS = 4
# A failed LoRA run's message is capped at 600 characters, the cut mark ` ...` included: PEFT's
# messages list every module of the model.
LINE_LIMIT = 596
LEARNING_RATE = 1e-2
LORA_RANK = 8


# Decisions (pure)


def attention_targets(module_names: Iterable[str]) -> list[str]:
    """The attention projection names (last path component) a model has, in our order."""
    present = {name.rsplit(".", 1)[-1] for name in module_names}
    return [n for n in ATTENTION_PROJECTIONS if n in present]


def loss_problem(losses: list[float]) -> str | None:
    """Why a run's losses are not a healthy start of training, or None."""
    if not losses:
        return "no optimizer step ran"
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        return f"non-finite loss at step {bad[0] + 1}: {losses[bad[0]]}"
    if len(losses) > 1 and not losses[-1] < losses[0]:
        return f"loss did not decrease over {len(losses)} steps ({losses[0]:.4f} -> {losses[-1]:.4f})"
    return None


def logits_tolerance(dtype_name: str) -> float:
    """Allowed max |diff| relative to the logits' scale: merging reorders float sums."""
    return 2e-2 if dtype_name in ("bfloat16", "float16") else 1e-4


def raised_inside_library(exc: BaseException) -> bool:
    """True when the traceback leaves our probes package: the library's failure, not our bug."""
    from probes.child import raised_by_harness

    return not raised_by_harness(exc)


# Shared child-side helpers (also used by the trl engine)


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def peak_memory_mb() -> dict[str, float]:
    """Peak memory so far: the process's resident set (Linux: KiB) and CUDA's allocator."""
    import torch

    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def load_base(model_dir: Path, trust_remote_code: bool = False):
    """The model as a fine-tuning recipe loads it, in its own dtype. Vision-language models that
    AutoModelForCausalLM does not map (Molmo 2) load as image-text-to-text models."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
    )
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
    )

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model_type = getattr(config, "model_type", None)
    auto = AutoModelForCausalLM
    if (
        model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    ):
        auto = AutoModelForImageTextToText
    model = auto.from_pretrained(model_dir, dtype="auto", trust_remote_code=trust_remote_code)
    return model.to(device_name())


def load_tokenizer(model_dir: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # many releases ship none; training batches need one
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


class Engine(EngineBase):
    name = "peft"
    package = "peft"
    packages = ("transformers", "torch", "accelerate", "safetensors", "tokenizers")

    def hardware(self) -> str:
        return torch_hardware(super().hardware())

    # The stage
    def stage_finetune(self) -> StageOutcome:
        import torch

        torch.set_num_threads(int(self.options.get("threads", 1)))
        torch.manual_seed(0)
        steps = int(self.options.get("finetune_steps", STEPS))
        tok = load_tokenizer(self.model_dir, self.trust_remote_code)
        batch = tok(list(TRAIN_TEXTS), return_tensors="pt", padding=True)
        # Only what a plain text loop passes: a model that demands more is `missing_inputs`.
        batch = {k: batch[k].to(device_name()) for k in ("input_ids", "attention_mask")}
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        metrics: dict[str, Any] = {"steps": steps, "batch_tokens": int(batch["attention_mask"].sum())}
        base = load_base(self.model_dir, self.trust_remote_code)
        dtype = str(base.dtype).replace("torch.", "")
        metrics["dtype"] = dtype
        metrics["device"] = device_name()
        attention = attention_targets(n for n, _ in base.named_modules())
        runs: list[tuple[str, Any]] = [("all_linear", "all-linear")]
        if attention:
            runs.append(("attention", attention))
        metrics["attention_targets"] = ",".join(attention) or None
        for i, (run, targets) in enumerate(runs):
            model = base if i == 0 else load_base(self.model_dir, self.trust_remote_code)
            try:
                self._lora_run(run, targets, model, batch, labels, steps, dtype, metrics)
            except StageFailure as exc:
                exc.metrics = {**metrics, **exc.metrics}
                raise
            except Exception as exc:
                if not raised_inside_library(exc):
                    raise  # our bug: the child reports it as error/infra
                # The traceback stays in the log; the child also logs the message below on
                # one line (PEFT's span lines), which is what the classifier and reader see.
                traceback.print_exc()
                raise StageFailure(
                    f"LoRA {run}: {one_line(exc, LINE_LIMIT)}", None, metrics={**metrics, **peak_memory_mb()}
                ) from exc
            finally:
                del model
                base = None
        metrics.update(peak_memory_mb())
        return StageOutcome(metrics=metrics)

    def _lora_run(
        self,
        run: str,
        targets: Any,
        model: Any,
        batch: dict[str, Any],
        labels: Any,
        steps: int,
        dtype: str,
        metrics: dict[str, Any],
    ) -> None:
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model

        config = LoraConfig(
            r=LORA_RANK,
            lora_alpha=2 * LORA_RANK,
            lora_dropout=0.0,
            target_modules=targets,
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config)
        trainable, _ = peft_model.get_nb_trainable_parameters()
        metrics[f"{run}_trainable_params"] = int(trainable)
        metrics[f"{run}_lora_modules"] = sum(
            1 for _, m in peft_model.named_modules() if hasattr(m, "lora_A") and m.lora_A
        )
        optimizer = torch.optim.AdamW(
            [p for p in peft_model.parameters() if p.requires_grad], lr=LEARNING_RATE
        )
        peft_model.train()
        losses: list[float] = []
        marks: list[float] = []  # after each step: the first one pays one-off set-up costs
        for _ in range(steps):
            loss = peft_model(**batch, labels=labels).loss
            losses.append(float(loss.detach().float()))
            if not math.isfinite(losses[-1]):
                break
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append(time.perf_counter())
        metrics[f"{run}_loss_first"] = round(losses[0], 5) if losses else None
        metrics[f"{run}_loss_last"] = round(losses[-1], 5) if losses else None
        if len(marks) > 1:
            metrics[f"{run}_steps_per_s"] = round((len(marks) - 1) / (marks[-1] - marks[0]), 3)
        problem = loss_problem(losses)
        if problem:
            raise StageFailure(f"dayone-wrong-output: LoRA {run}: {problem}", "wrong_output")

        # Save, reload onto a fresh base, merge: the merged model must answer like the adapter.
        peft_model.eval()
        adapter_dir = self.workdir / f"adapter-{run}"
        peft_model.save_pretrained(adapter_dir)
        metrics[f"{run}_adapter_mb"] = round(
            sum(f.stat().st_size for f in adapter_dir.rglob("*") if f.is_file()) / 2**20, 3
        )
        with torch.no_grad():
            trained = peft_model(**batch).logits.float()
        del peft_model, optimizer
        reloaded = PeftModel.from_pretrained(
            load_base(self.model_dir, self.trust_remote_code), adapter_dir
        ).eval()
        mask = batch["attention_mask"].bool()
        with torch.no_grad():
            adapter = reloaded(**batch).logits.float()
            with reloaded.disable_adapter():
                bare = reloaded(**batch).logits.float()
            merged_model = reloaded.merge_and_unload()
            merged = merged_model(**batch).logits.float()
        scale = float(adapter[mask].abs().max()) or 1.0
        tol = logits_tolerance(dtype)
        diffs = {
            "reload": float((trained - adapter)[mask].abs().max()) / scale,
            "merge": float((merged - adapter)[mask].abs().max()) / scale,
            "adapter_effect": float((adapter - bare)[mask].abs().max()) / scale,
        }
        for key, value in diffs.items():
            metrics[f"{run}_{key}_diff"] = float(f"{value:.3g}")
        if diffs["adapter_effect"] <= tol:
            raise StageFailure(
                f"dayone-wrong-output: LoRA {run}: the trained adapter does not change the model's output",
                "wrong_output",
            )
        if diffs["reload"] > tol:
            raise StageFailure(
                f"dayone-wrong-output: LoRA {run}: reloaded adapter's logits "
                f"differ from the trained model's by {diffs['reload']:.3g} "
                f"(relative; tolerance {tol})",
                "wrong_output",
            )
        if diffs["merge"] > tol:
            raise StageFailure(
                f"dayone-wrong-output: LoRA {run}: merged model's logits differ "
                f"from the adapter model's by {diffs['merge']:.3g} (relative; "
                f"tolerance {tol})",
                "wrong_output",
            )
