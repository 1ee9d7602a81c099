"""llama.cpp through llama-cpp-python: convert (HF -> GGUF), load, generate, parity, serve.

Heavy imports (llama_cpp, numpy) inside methods only: this module is imported in the child.
llama-cpp-python says only `Failed to load model from file`; llama.cpp's log says why (unknown
model architecture, tensor data not within the file bounds, invalid magic). So a `llama_log_set`
callback writes that log to the child's stderr, where the host's classifier reads it.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from probes import gguf_convert, parity, quantize
from probes.classify import CONVERSION_CAUSES, classify, status_for_class
from probes.engines.base import ServerEngine
from probes.modelinfo import model_config, read_json, tokenizer_the_copy_cannot_carry
from probes.outcome import HarnessError, StageFailure, StageOutcome

GGML_LOG_LEVEL_DEBUG, GGML_LOG_LEVEL_CONT = 1, 5
# Converter failures that say more than "the converter cannot do it": kept as they are.
CONVERT_CLASSES_KEPT = frozenset(
    {"corrupt_or_missing_weights", "out_of_memory", "infra", "remote_code_required", *CONVERSION_CAUSES}
)
# What the host-side fixtures write in dayone.json: their tokenizer is trained locally, so no
# llama.cpp release knows its pre-tokenizer hash (a GPT-2 byte-level BPE).
FIXTURE_ID_PREFIX = "dayone-fixtures/"
# The converter's traceback passes through its vocabulary step (set_vocab, _set_vocab_*) when
# reading the tokenizer is what failed.
VOCAB_STEP = re.compile(r'File "[^"]+", line \d+, in (set_vocab|_set_vocab_\w+)\b')
FIXTURE_PRETOKENIZER = "gpt-2"


def eos_token_ids(model_dir: Path, config: dict[str, Any] | None = None) -> list[int]:
    """The ids transformers' min_new_tokens suppresses: suppress the same ones here. CONFIG:
    the model's config.json where it was read already."""
    ids: list[int] = []
    config = model_config(model_dir) if config is None else config
    for found in (read_json(model_dir / "generation_config.json"), config):
        value = found.get("eos_token_id")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    return ids


def pretokenizer_fallback(options: dict[str, Any], model_dir: Path) -> str | None:
    """The pre-tokenizer name the converter falls back on for an unknown hash (dayone's
    fixtures, or when the option asks), else None. Also written into the bare reproduction."""
    chosen = options.get("pretokenizer_fallback")
    if chosen is False:
        return None
    if isinstance(chosen, str):
        return chosen
    meta_id = str(read_json(model_dir / "dayone.json").get("id") or "")
    return FIXTURE_PRETOKENIZER if chosen or meta_id.startswith(FIXTURE_ID_PREFIX) else None


class Engine(ServerEngine):
    name = "llamacpp"
    package = "llama-cpp-python"
    packages = ("gguf", "transformers", "torch", "numpy", "sentencepiece")
    served_name = None  # llama-cpp-python serves one model, whatever a request names
    server_log = "llamacpp-server.log"
    ready_path = "/v1/models"
    timeout_option, timeout_default = "serve_timeout_s", 120.0
    records_env_patches = False

    llm: Any = None
    gguf: Path | None = None
    completions: list[dict[str, Any]] | None = None
    _log_callback: Any = None

    def __init__(self, model_dir: Path, options: dict[str, Any], workdir: Path):
        super().__init__(model_dir, options, workdir)
        self.threads = int(options.get("threads", 1))
        self.n_ctx = int(options.get("n_ctx", 512))
        self.n_gpu_layers = int(options.get("n_gpu_layers", 0))
        self.converter = gguf_convert.converter_dir(options)
        if options.get("gguf"):
            self.gguf = Path(options["gguf"])

    # Environment
    def describe(self) -> dict[str, Any]:
        info = super().describe()
        commit = gguf_convert.converter_info(self.converter).get("llama_cpp_commit")
        if commit:
            info["packages"]["llama.cpp"] = commit  # the llama.cpp this release vendors
        return info

    def hardware(self) -> str:
        import llama_cpp

        if self.n_gpu_layers and llama_cpp.llama_supports_gpu_offload():
            return "gpu:llama.cpp-offload"
        return super().hardware()

    def _install_log(self) -> None:
        """Route llama.cpp's and ggml's log to our stderr, through a dup of fd 2:
        llama-cpp-python points fds 1 and 2 at /dev/null while it loads a model."""
        if self._log_callback is not None:
            return
        import ctypes

        import llama_cpp

        fd = os.dup(2)
        debug = bool(self.options.get("llama_debug_log"))
        last = [0]

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
            try:
                shown = level if level != GGML_LOG_LEVEL_CONT else last[0]
                last[0] = shown
                if shown == GGML_LOG_LEVEL_DEBUG and not debug:
                    return
                os.write(fd, text or b"")
            except BaseException:  # never let an exception cross into C
                pass

        self._log_callback = callback  # keep it alive as long as llama.cpp may call it
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))

    # Convert
    def _pretokenizer_fallback(self) -> str | None:
        return pretokenizer_fallback(self.options, self.model_dir)

    def _convert(self) -> StageOutcome:
        script = self.converter / "convert_hf_to_gguf.py"
        if not script.exists():
            raise HarnessError(
                f"no GGUF converter at {self.converter}: the environment lacks "
                f"the probes.gguf_convert:install_converter patch"
            )
        outtype = str(self.options.get("gguf_outtype") or gguf_convert.outtype_for(self.config))
        out = Path(self.options.get("gguf_out") or self.workdir / "model.gguf")
        fallback = self._pretokenizer_fallback()
        cmd = [
            sys.executable,
            "-m",
            "probes.gguf_convert",
            "--converter",
            str(self.converter),
            *(["--pretokenizer-fallback", fallback] if fallback else []),
            "--",
            str(self.model_dir),
            "--outfile",
            str(out),
            "--outtype",
            outtype,
            *[str(a) for a in self.options.get("convert_args", ())],
        ]
        t0 = time.perf_counter()
        # Same process group as the child: the host's watchdog kills it with us. Its output is
        # copied to our stderr line by line, so a killed conversion still leaves its log.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines = []
        for line in proc.stdout:
            sys.stderr.write(line)
            lines.append(line)
        rc = proc.wait()
        output = "".join(lines)
        convert_s = time.perf_counter() - t0
        if rc != 0 or not out.exists():
            foreign = tokenizer_the_copy_cannot_carry(self.model_dir)
            if foreign and VOCAB_STEP.search(output):  # it failed reading the tokenizer
                raise HarnessError(
                    f"no verdict: {foreign}; the converter said: {gguf_convert.error_line(output)}"
                )
            found = classify(output, self.name).failure_class
            cls = found if found in CONVERT_CLASSES_KEPT else "conversion_failed"
            raise StageFailure(
                gguf_convert.error_line(output),
                cls,
                status=status_for_class(cls),
                metrics={"convert_s": round(convert_s, 3), "outtype": outtype},
            )
        n_tensors = gguf_convert.gguf_header(out)[1]
        if n_tensors == 0:
            # The converter writes a metadata-only GGUF when it finds no weights at all.
            raise StageFailure(
                "the converter wrote a GGUF with no tensors: the model directory "
                "has no weights it could read",
                "corrupt_or_missing_weights",
                metrics={"convert_s": round(convert_s, 3), "outtype": outtype},
            )
        self.gguf = out
        return StageOutcome(
            metrics={
                "n_tensors": n_tensors,
                "convert_s": round(convert_s, 3),
                "outtype": outtype,
                "gguf_bytes": out.stat().st_size,
                "pretokenizer_fallback": gguf_convert.FALLBACK_MARKER in output,
            }
        )

    def stage_convert(self) -> StageOutcome:
        if self.options.get("gguf"):
            return StageOutcome(
                metrics={"gguf_bytes": Path(self.options["gguf"]).stat().st_size},
                message="a GGUF was given: conversion not run",
            )
        return self._convert()

    def _ensure_gguf(self) -> Path:
        if self.gguf is None:
            self._convert()
        assert self.gguf is not None
        return self.gguf

    # Load / generate
    def stage_load(self) -> StageOutcome:
        import llama_cpp

        gguf = self._ensure_gguf()
        t0 = time.perf_counter()
        self._load_path(gguf)
        load_s = time.perf_counter() - t0
        meta = self.llm.metadata
        return StageOutcome(
            metrics={
                "load_s": round(load_s, 4),
                "architecture": meta.get("general.architecture"),
                "parameters": int(llama_cpp.llama_model_n_params(self.llm.model)),
                "file_type": meta.get("general.file_type"),
                "n_vocab": self.llm.n_vocab(),
                "gguf_bytes": gguf.stat().st_size,
            }
        )

    def _greedy(self, prompt_ids: list[int], eos: list[int], top_k: int) -> tuple[list[int], list]:
        """Greedy decoding on llama.cpp's raw logits, EOS suppressed like min_new_tokens."""
        import numpy as np

        llm = self.llm
        llm.reset()
        llm.eval(prompt_ids)
        token_ids: list[int] = []
        top: list[list[list[float]]] = []
        for _ in range(self.max_new_tokens):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            peak = logits.max()
            logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))
            if not np.isfinite(logprobs).all():
                raise StageFailure("dayone-wrong-output: non-finite logits", "wrong_output")
            best = np.argsort(-logprobs, kind="stable")[:top_k]
            top.append([[int(i), float(logprobs[i])] for i in best])
            logits[[e for e in eos if 0 <= e < logits.shape[0]]] = -np.inf
            token = int(np.argmax(logits))
            token_ids.append(token)
            llm.eval([token])
        return token_ids, top

    def _completions(self, top_k: int) -> tuple[list[dict[str, Any]], bool]:
        """The workload's greedy completions on the loaded model (top_k logprobs a step), and
        whether llama.cpp's own tokenizer agrees with the reference's prompt ids."""
        reference_ids = parity.reference_prompt_ids(self.options)
        eos = eos_token_ids(self.model_dir, self.config) or [self.llm.token_eos()]
        completions = []
        own_match = True
        for prompt in self.prompts:
            own = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
            # Feed the reference's token ids, so both engines see the same tokens; whether
            # llama.cpp's own tokenizer agrees is a metric.
            ids = reference_ids.get(prompt) or own
            own_match &= own == ids
            if len(ids) + self.max_new_tokens > self.n_ctx:
                raise HarnessError(f"prompt of {len(ids)} tokens does not fit n_ctx {self.n_ctx}")
            token_ids, top = self._greedy(list(ids), eos, top_k)
            completions.append(
                {
                    "prompt": prompt,
                    "prompt_ids": list(ids),
                    "token_ids": token_ids,
                    "text": self.llm.detokenize(token_ids).decode("utf-8", "replace"),
                    "top_logprobs": top,
                }
            )
        return completions, own_match

    def stage_generate(self) -> StageOutcome:
        if self.llm is None:
            self.stage_load()
        reference_ids = parity.reference_prompt_ids(self.options)
        t0 = time.perf_counter()
        completions, own_match = self._completions(self.top_k)
        elapsed = time.perf_counter() - t0
        self.completions = completions
        new_tokens = sum(len(c["token_ids"]) for c in completions)
        return StageOutcome(
            metrics={
                "new_tokens": new_tokens,
                "prompts": len(completions),
                "generate_s": round(elapsed, 4),
                "output_tok_s": round(new_tokens / elapsed, 2) if elapsed else math.inf,
                "reference_prompt_ids": bool(reference_ids),
                "prompt_tokens_match": own_match,
            },
            output={"completions": completions},
        )

    # Parity
    def stage_parity(self) -> StageOutcome:
        if self.completions is None:
            self.stage_generate()
        return parity.parity_stage(self.options, self.completions or [], self.top_k)

    # Quantize
    def _quantize_file(self, source: Path, out: Path, qtype: quantize.QuantType) -> int:
        """llama.cpp's own quantizer (llama_model_quantize, the quantize tool's code path)."""
        import ctypes

        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{qtype.ftype}")
        params.nthread = self.threads
        return int(
            llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
        )

    def _quantized_type(
        self, source: Path, qtype: quantize.QuantType, top_k: int, baseline: list[dict[str, Any]]
    ) -> tuple[quantize.TypeVerdict, dict]:
        out = self.workdir / quantize.FILE_PATTERN.format(qtype.name)
        t0 = time.perf_counter()
        rc = self._quantize_file(source, out, qtype)
        facts: dict[str, Any] = {"quantize_s": round(time.perf_counter() - t0, 4)}
        if rc != 0 or not out.exists():
            return quantize.TypeVerdict(
                "fail",
                quantize.QUANTIZATION_FAILED,
                f"llama_model_quantize to {qtype.name} returned {rc}",
                facts,
            ), facts
        facts.update(gguf_bytes=out.stat().st_size, **quantize.tensor_summary(out, qtype))
        t1 = time.perf_counter()
        self._load_path(out)
        facts["load_s"] = round(time.perf_counter() - t1, 4)
        try:
            completions, _ = self._completions(top_k)
        finally:
            self._free_model()
        verdict = quantize.judge(qtype, baseline, completions)
        return verdict, facts

    def _load_path(self, gguf: Path) -> None:
        import llama_cpp

        self._install_log()
        # logits_all: every position's logits are kept, which the top-k logprobs need.
        self.llm = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=self.n_ctx,
            n_batch=self.n_ctx,
            logits_all=True,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            seed=0,
            n_gpu_layers=self.n_gpu_layers,
            verbose=False,
        )

    def stage_quantize(self) -> StageOutcome:
        """Each type (probes/quantization.json) by llama.cpp's own quantizer from the converted
        GGUF, loaded, its greedy completions judged against the unquantized GGUF's own with
        the type's tolerance (probes/quantize.py:judge). Per-tensor fallbacks (a K-quant on a
        row not divisible by 256) are counted, not failed."""
        try:
            types = quantize.selected_types(self.options)
        except ValueError as exc:
            raise HarnessError(str(exc)) from exc
        gguf = self._ensure_gguf()
        # `quantize_input`: a GGUF quantized in place of the converted one (tests: another
        # model's weights must be caught).
        source = Path(self.options.get("quantize_input") or gguf)
        top_k = quantize.widest_top_k(types, self.top_k)
        self._free_model()
        self._load_path(gguf)
        try:
            baseline, _ = self._completions(top_k)
            source_type = self.llm.metadata.get("general.file_type")
        finally:
            self._free_model()
        verdicts: dict[str, quantize.TypeVerdict] = {}
        per_type: dict[str, dict[str, Any]] = {}
        for qtype in types:
            verdict, facts = self._quantized_type(source, qtype, top_k, baseline)
            verdicts[qtype.name] = verdict
            per_type[qtype.name] = {
                "status": verdict.status,
                "failure_class": verdict.failure_class,
                **facts,
                **verdict.metrics,
            }
            print(
                f"dayone: quantize {qtype.name}: {verdict.status}: {verdict.message}",
                file=sys.stderr,
                flush=True,
            )
        failed = next((v for v in verdicts.values() if v.status == "fail"), None)
        if failed is not None:
            # The log's last telling line, the same words as the bare script's (the failure
            # rules read "parity failed" as wrong_output; confirmation compares the two).
            print(f"dayone: stage quantize failed: {failed.message}", file=sys.stderr, flush=True)
        status, failure_class, message = quantize.combine(verdicts, per_type)
        metrics = {
            **quantize.flat_metrics(per_type),
            "source_file_type": source_type,
            "top_k": top_k,
            "quantize_s": round(sum(t["quantize_s"] for t in per_type.values()), 4),
        }
        return StageOutcome(
            status=status,
            metrics=metrics,
            message=message,
            failure_class=failure_class,
            output={"types": per_type},
        )

    # Serve
    def server_argv(self, port: int) -> list[str]:
        # No --chat_format: the server takes the chat template the converter wrote into the
        # GGUF (the model's own), as a user's server would.
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self._ensure_gguf()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
            "--n_threads_batch",
            str(self.threads),
            "--n_gpu_layers",
            str(self.n_gpu_layers),
        ]

    def before_server(self) -> None:
        self._ensure_gguf()
        self._free_model()  # one copy of the weights at a time

    def serve_request(self) -> dict[str, Any]:
        # Random weights like EOS at once: bias it away so the answer has tokens to check.
        eos = eos_token_ids(self.model_dir, self.config)
        return {
            "max_tokens": int(self.options.get("serve_max_tokens", 8)),
            "params": {"logit_bias": {str(e): -100 for e in eos}},
            "template": "gguf",
            "log_lines": 400,
        }

    def stage_serve(self) -> StageOutcome:
        try:
            return super().stage_serve()
        finally:
            self.stop_server()

    # Cleanup
    def _free_model(self) -> None:
        if self.llm is not None:
            try:
                self.llm.close()
            finally:
                self.llm = None

    def close(self) -> None:
        super().close()
        self._free_model()
