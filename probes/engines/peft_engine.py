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

import json
import math
import resource
import shutil
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from probes import workload
from probes.engines.base import EngineBase, torch_hardware
from probes.outcome import HarnessError, StageFailure, StageOutcome
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
WRONG_OUTPUT = "dayone-wrong-output: "  # the marker of a wrong result we detected (probes/rules.json)
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
    # Below the first loss at any later step, not necessarily at the last: at this learning
    # rate Adam may overshoot on random weights after a first fall (seen on tiny DeepSeek V3.2
    # and Laguna copies), which is training working; a loss that never falls is not.
    if len(losses) > 1 and not min(losses[1:]) < losses[0]:
        seen = ", ".join(f"{v:.4f}" for v in losses)
        return f"loss did not decrease over {len(losses)} steps ({seen})"
    return None


# Merging folds the adapter into the base weights, rounded to the model's dtype: in bfloat16 that
# rounding alone moves the logits about as far as running the model in bfloat16 at all (a tiny
# Gemma 4 copy: merged 0.07 from the adapter, relative, where the adapter in bfloat16 is 0.04
# from itself in float32). So a merge is judged twice: in float32, where it is exact arithmetic
# (MERGE_EXACT), and in the model's dtype against that dtype's own noise, measured on the same
# adapter: a small multiple of it, never below the floor. In float32 the merged sums still round
# apart (7.7e-5 on that Gemma 4 copy, through its logit soft-cap); a wrong merge (a module left
# out, a wrong scale) moves them by about the adapter's whole effect, 1.0.
MERGE_EXACT = 1e-3
NOISE_MULTIPLE = 4.0


def logits_tolerance(dtype_name: str, noise: float = 0.0) -> float:
    """Allowed max |diff| relative to the logits' scale in `dtype_name`: merging reorders float
    sums and rounds the merged weights; `noise` is the dtype's own (its logits against float32)."""
    floor = 2e-2 if dtype_name in ("bfloat16", "float16") else MERGE_EXACT
    return max(floor, NOISE_MULTIPLE * noise)


def adapter_problem(run: str, diffs: dict[str, float], dtype_name: str, noise: float) -> str | None:
    """Why a trained adapter is not what fine-tuning should give, or None. `diffs` are relative
    to the logits' scale: `adapter_effect` (adapter on against off), `reload` (saved and loaded
    again against the trained model), `merge` (merged against the adapter, in the model's
    dtype) and, for a model not in float32, `merge_float32` (the same in float32)."""
    # Adapter on against off and reloaded against trained compare one dtype with itself: no
    # rounding of merged weights in between, so the floor alone.
    floor = logits_tolerance(dtype_name)
    if diffs["adapter_effect"] <= floor:
        return f"LoRA {run}: the trained adapter does not change the model's output"
    if diffs["reload"] > floor:
        return (
            f"LoRA {run}: reloaded adapter's logits differ from the trained model's by "
            f"{diffs['reload']:.3g} (relative; tolerance {floor:.3g})"
        )
    tol = logits_tolerance(dtype_name, noise)
    exact = diffs.get("merge_float32")
    if exact is not None and exact > MERGE_EXACT:
        return (
            f"LoRA {run}: merged model's logits differ from the adapter model's by {exact:.3g} "
            f"in float32 (relative; tolerance {MERGE_EXACT})"
        )
    if exact is None and diffs["merge"] > tol:  # a float32 model: its merge is the exact one
        return (
            f"LoRA {run}: merged model's logits differ from the adapter model's by "
            f"{diffs['merge']:.3g} in {dtype_name} (relative; tolerance {tol:.3g})"
        )
    return None


def merge_drift(run: str, diffs: dict[str, float], dtype_name: str, noise: float) -> str | None:
    """Where the merge is exact in float32 but the merged weights, rounded to the model's dtype,
    move the logits beyond that dtype's noise: what users of a merged bfloat16 model get, so
    `degraded` (precision drift) with both figures, never a red (the arithmetic is right) and
    never a silent green."""
    tol = logits_tolerance(dtype_name, noise)
    if "merge_float32" not in diffs or diffs["merge"] <= tol:
        return None
    return (
        f"LoRA {run}: merged in {dtype_name}, the logits move {diffs['merge']:.3g} from the adapter "
        f"model's (relative; {NOISE_MULTIPLE:g}x the {dtype_name} noise {noise:.3g} allows {tol:.3g}); "
        f"merged in float32 they agree ({diffs['merge_float32']:.2g})"
    )


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


def load_base(model_dir: Path, trust_remote_code: bool = False, dtype: str = "auto"):
    """The model as a fine-tuning recipe loads it, in its own dtype (or `dtype`). Vision-language
    models that AutoModelForCausalLM does not map (Molmo 2) load as image-text-to-text models."""
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
    model = auto.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
    return model.to(device_name())


def load_tokenizer(model_dir: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # many releases ship none; training batches need one
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def keep_model_files(model_dir: Path, merged_dir: Path) -> None:
    """Make a merged model's folder read like the model's own: its tokenizer and other small
    files, and the config's dtype (merged in float32, served in the model's dtype)."""
    written = {p.name for p in merged_dir.iterdir()}
    for f in Path(model_dir).iterdir():
        if f.is_file() and f.name not in written and not f.name.endswith((".safetensors", ".bin", ".gguf")):
            shutil.copy2(f, merged_dir / f.name)
    source = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    path = merged_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("dtype", "torch_dtype"):
        config.pop(key, None)
        if key in source:
            config[key] = source[key]
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


class Engine(EngineBase):
    name = "peft"
    package = "peft"
    packages = ("transformers", "torch", "accelerate", "safetensors", "tokenizers")

    def hardware(self) -> str:
        return torch_hardware(super().hardware())

    # The stage
    def stage_finetune(self) -> StageOutcome:
        steps, batch, labels = self._batch()
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
        # Every run is tried, so a cell says which targets train (Llama 4: attention only; its
        # router, a Linear returning a tuple, breaks all-linear), each failure with its own words.
        failures: list[StageFailure] = []
        drifts: list[str] = []
        for i, (run, targets) in enumerate(runs):
            model = base if i == 0 else load_base(self.model_dir, self.trust_remote_code)
            try:
                drift = self._lora_run(run, targets, model, batch, labels, steps, dtype, metrics)
                metrics[f"{run}_trains"] = True
                if drift:
                    drifts.append(drift)
            except StageFailure as exc:
                failures.append(exc)
            except Exception as exc:
                if not raised_inside_library(exc):
                    raise  # our bug: the child reports it as error/infra
                # The traceback stays in the log; the child also logs the message below on
                # one line (PEFT's span lines), which is what the classifier and reader see.
                traceback.print_exc()
                failures.append(StageFailure(f"LoRA {run}: {one_line(exc, LINE_LIMIT)}"))
            finally:
                del model
                base = None
        metrics.update(peak_memory_mb())
        if failures:
            trained = [f"LoRA {run}: trains" for run, _ in runs if metrics.get(f"{run}_trains")]
            rest = [str(f).removeprefix(WRONG_OUTPUT) for f in failures[1:]]
            raise StageFailure(
                "; ".join([str(failures[0]), *rest, *trained]),
                failures[0].failure_class,
                metrics={**metrics, **{k: v for f in failures for k, v in f.metrics.items()}},
            )
        if drifts:
            return StageOutcome(
                status="degraded", failure_class="precision_drift", metrics=metrics, message="; ".join(drifts)
            )
        return StageOutcome(metrics=metrics)

    def _batch(self) -> tuple[int, dict[str, Any], Any]:
        """(steps, the tiny fixed batch, its labels), seeded as every run here is."""
        import torch

        torch.set_num_threads(int(self.options.get("threads", 1)))
        torch.manual_seed(0)
        tok = load_tokenizer(self.model_dir, self.trust_remote_code)
        batch = tok(list(TRAIN_TEXTS), return_tensors="pt", padding=True)
        # Only what a plain text loop passes: a model that demands more is `missing_inputs`.
        batch = {k: batch[k].to(device_name()) for k in ("input_ids", "attention_mask")}
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return int(self.options.get("finetune_steps", STEPS)), batch, labels

    def stage_adapter(self) -> StageOutcome:
        """A LoRA adapter made for serving, what a serving engine's `lora` stage loads: the
        attention projections (all linear layers where the model names none), trained as the
        finetune stage trains, saved under options['adapter_out'] as `adapter/`, with `merged/`
        beside it: the model with the adapter merged in float32, a model folder whose config
        keeps the model's own dtype, which the transformers reference reads."""
        from peft import PeftModel

        out = self.options.get("adapter_out")
        if not out:
            raise HarnessError("the adapter stage needs options['adapter_out'] (the host sets it)")
        out = Path(out)
        steps, batch, labels = self._batch()
        base = load_base(self.model_dir, self.trust_remote_code)
        attention = attention_targets(n for n, _ in base.named_modules())
        run, targets = ("attention", attention) if attention else ("all_linear", "all-linear")
        metrics: dict[str, Any] = {"steps": steps, "adapter_targets": ",".join(attention) or "all-linear"}
        peft_model = self._train(run, targets, base, batch, labels, steps, metrics)
        peft_model.save_pretrained(out / "adapter")
        del peft_model, base
        merged = PeftModel.from_pretrained(
            load_base(self.model_dir, self.trust_remote_code, dtype="float32"), out / "adapter"
        ).merge_and_unload()
        merged.save_pretrained(out / "merged")
        keep_model_files(self.model_dir, out / "merged")
        metrics.update(peak_memory_mb())
        return StageOutcome(metrics=metrics)

    def _train(
        self,
        run: str,
        targets: Any,
        model: Any,
        batch: dict[str, Any],
        labels: Any,
        steps: int,
        metrics: dict[str, Any],
    ) -> Any:
        """LoRA on `targets`, `steps` optimizer steps on the batch: the PEFT model, or a
        StageFailure where the losses are not a healthy start of training."""
        import torch
        from peft import LoraConfig, get_peft_model

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
            raise StageFailure(f"{WRONG_OUTPUT}LoRA {run}: {problem}", "wrong_output")
        return peft_model

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
    ) -> str | None:
        """One LoRA run; raises StageFailure where it fails, returns its merge drift (or None)."""
        import torch
        from peft import PeftModel

        peft_model = self._train(run, targets, model, batch, labels, steps, metrics)

        # Save, reload onto a fresh base, merge: the merged model must answer like the adapter.
        peft_model.eval()
        adapter_dir = self.workdir / f"adapter-{run}"
        peft_model.save_pretrained(adapter_dir)
        metrics[f"{run}_adapter_mb"] = round(
            sum(f.stat().st_size for f in adapter_dir.rglob("*") if f.is_file()) / 2**20, 3
        )
        with torch.no_grad():
            trained = peft_model(**batch).logits.float()
        del peft_model
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
        diffs = {
            "reload": float((trained - adapter)[mask].abs().max()) / scale,
            "merge": float((merged - adapter)[mask].abs().max()) / scale,
            "adapter_effect": float((adapter - bare)[mask].abs().max()) / scale,
        }
        noise = 0.0
        if dtype != "float32":
            del reloaded, merged_model
            exact = PeftModel.from_pretrained(
                load_base(self.model_dir, self.trust_remote_code, dtype="float32"), adapter_dir
            ).eval()
            with torch.no_grad():
                adapter32 = exact(**batch).logits.float()
                merged32 = exact.merge_and_unload()(**batch).logits.float()
            noise = float((adapter - adapter32)[mask].abs().max()) / scale
            diffs["merge_float32"] = float((merged32 - adapter32)[mask].abs().max()) / scale
            metrics[f"{run}_dtype_noise"] = float(f"{noise:.3g}")
        for key, value in diffs.items():
            metrics[f"{run}_{key}_diff"] = float(f"{value:.3g}")
        problem = adapter_problem(run, diffs, dtype, noise)
        if problem:
            raise StageFailure(WRONG_OUTPUT + problem, "wrong_output")
        return merge_drift(run, diffs, dtype, noise)
