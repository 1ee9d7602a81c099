"""transformers: the reference engine. Heavy imports inside methods only (child side)."""

from __future__ import annotations

import math
import time
from typing import Any

from probes.engines.base import EngineBase, torch_hardware
from probes.outcome import StageFailure, StageOutcome


class Engine(EngineBase):
    name = "transformers"
    package = "transformers"
    packages = ("torch", "tokenizers", "safetensors", "accelerate")

    model: Any = None
    tokenizer: Any = None

    def hardware(self) -> str:
        return torch_hardware(super().hardware())

    def stage_load(self) -> StageOutcome:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(int(self.options.get("threads", 1)))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        t0 = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model_dir, trust_remote_code=self.trust_remote_code
        )
        # dtype="auto": the model's own dtype, as released (a float32 probe of a bf16 model
        # can give false reds and false greens). Option `dtype` overrides it: the parity
        # reference's float32 twin (matrix.probing.ensure_reference) uses it.
        import transformers

        # 4.x calls the argument torch_dtype; 5.x dtype.
        dtype_arg = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        self.model, info = AutoModelForCausalLM.from_pretrained(
            self.model_dir,
            trust_remote_code=self.trust_remote_code,
            output_loading_info=True,
            **{dtype_arg: self.options.get("dtype") or "auto"},
        )
        self.model.to(device).eval()
        load_s = time.perf_counter() - t0
        # transformers silently re-initialises missing tensors at random: that is not a load.
        missing = [k for k in info.get("missing_keys", ()) if k]
        if missing:
            raise StageFailure(
                f"missing tensors re-initialised at random: {', '.join(sorted(missing)[:5])}"
                + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""),
                "corrupt_or_missing_weights",
            )
        params = sum(p.numel() for p in self.model.parameters())
        return StageOutcome(
            metrics={
                "load_s": round(load_s, 4),
                "parameters": params,
                "dtype": str(self.model.dtype).replace("torch.", ""),
                "device": device,
            }
        )

    def stage_generate(self) -> StageOutcome:
        import torch

        completions = []
        t0 = time.perf_counter()
        new_tokens = 0
        for prompt in self.prompts:
            ids = self.tokenizer(prompt, return_tensors="pt").input_ids.to(self.model.device)
            with torch.no_grad():
                # Random weights like EOS: force the length so there is something to compare.
                out = self.model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=False,
                    max_new_tokens=self.max_new_tokens,
                    min_new_tokens=self.max_new_tokens,
                    output_logits=True,
                    return_dict_in_generate=True,
                    pad_token_id=self.tokenizer.pad_token_id or 0,
                )
            token_ids = out.sequences[0, ids.shape[1] :].tolist()
            top: list[list[list[float]]] = []
            for logits in out.logits:
                logprobs = torch.log_softmax(logits[0].float(), dim=-1)
                if not torch.isfinite(logprobs).all():
                    raise StageFailure("dayone-wrong-output: non-finite logits", "wrong_output")
                values, indices = logprobs.topk(self.top_k)
                top.append([[int(i), float(v)] for i, v in zip(indices, values)])
            new_tokens += len(token_ids)
            completions.append(
                {
                    "prompt": prompt,
                    "prompt_ids": ids[0].tolist(),
                    "token_ids": token_ids,
                    "text": self.tokenizer.decode(token_ids, skip_special_tokens=True),
                    "top_logprobs": top,
                }
            )
        elapsed = time.perf_counter() - t0
        if new_tokens < self.max_new_tokens * len(self.prompts):
            raise StageFailure(
                f"dayone-wrong-output: generated {new_tokens} tokens, expected "
                f"{self.max_new_tokens * len(self.prompts)}",
                "wrong_output",
            )
        return StageOutcome(
            metrics={
                "new_tokens": new_tokens,
                "prompts": len(self.prompts),
                "generate_s": round(elapsed, 4),
                "output_tok_s": round(new_tokens / elapsed, 2) if elapsed else math.inf,
            },
            output={"completions": completions},
        )

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
