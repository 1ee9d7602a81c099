"""Quantization: llama.cpp's own quantizer on a converted GGUF, judged against that GGUF.

Standard library only (the quantizer itself runs in probes/engines/llamacpp.py). What is data:
`quantization.json` (the types, the tensor types each mix is made of, each type's tolerance).
What is rule, written once: `judge` compares a quantized model's greedy completions with the
unquantized GGUF's own through probes/parity.py:check_logprobs_close, with the type's top-k and
logprob gap; `gguf_tensor_types` reads which ggml type each tensor got, so a K-quant falling
back per tensor (a row not divisible by its 256-wide block, common on tiny copies) is recorded
as what it is, not as a failure.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Sequence

from probes import parity

DATA_PATH = Path(__file__).with_name("quantization.json")
# Why a quantize stage is degraded (probes/stages.py:DEGRADED_REASONS).
QUANTIZATION_DRIFT = "quantization_drift"
# The quantizer refused or wrote nothing (probes/classify.py:FAILURE_CLASSES).
QUANTIZATION_FAILED = "quantization_failed"
# Where quantized files go, beside the converted GGUF: model-<TYPE>.gguf.
FILE_PATTERN = "model-{}.gguf"

# ggml's tensor types by number (ggml.h, enum ggml_type); unknown ones read as typeN.
GGML_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    16: "IQ2_XXS",
    17: "IQ2_XS",
    18: "IQ3_XXS",
    19: "IQ1_S",
    20: "IQ4_NL",
    21: "IQ3_S",
    22: "IQ2_S",
    23: "IQ4_XS",
    24: "I8",
    25: "I16",
    26: "I32",
    27: "I64",
    28: "F64",
    29: "IQ1_M",
    30: "BF16",
    34: "TQ1_0",
    35: "TQ2_0",
    39: "MXFP4",
}
# Tensor types that are not quantized (norms, biases and small tensors stay so in every mix).
UNQUANTIZED = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})


@dataclass(frozen=True)
class QuantType:
    name: str  # as llama.cpp's quantize tool spells it: Q8_0, Q4_K_M
    ftype: str  # llama_cpp.LLAMA_FTYPE_<ftype>
    mix: tuple[str, ...]  # the tensor types the mix is made of
    top_k: int
    max_logprob_gap: float


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return json.loads(DATA_PATH.read_text(encoding="utf-8"))


def quant_types() -> dict[str, QuantType]:
    return {
        name: QuantType(name, str(t["ftype"]), tuple(t["mix"]), int(t["top_k"]), float(t["max_logprob_gap"]))
        for name, t in _data()["types"].items()
    }


def default_types() -> list[str]:
    return list(_data()["default"])


def selected_types(options: Mapping[str, Any]) -> list[QuantType]:
    """The types a probe quantizes to: options['quant_types'] (a list or comma-separated) or
    the default; an unknown name is a ValueError naming the known ones."""
    chosen = options.get("quant_types") or default_types()
    names = [n.strip() for n in (chosen.split(",") if isinstance(chosen, str) else chosen) if str(n).strip()]
    known = quant_types()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown quantization type(s) {unknown}; known: {', '.join(known)}")
    return [known[n] for n in names]


def widest_top_k(types: Sequence[QuantType], floor: int) -> int:
    """How many logprobs each step must keep for every type's rule (at least `floor`)."""
    return max([floor, *(t.top_k for t in types)])


# The GGUF's tensor types (stdlib reader of the header and tensor infos)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _read(fh: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack("<" + fmt, data)[0]


def _skip_string(fh: BinaryIO) -> None:
    fh.seek(_read(fh, "Q"), 1)


def _skip_value(fh: BinaryIO, kind: int) -> None:
    if kind in _SCALARS:
        fh.seek(struct.calcsize("<" + _SCALARS[kind]), 1)
    elif kind == 8:
        _skip_string(fh)
    elif kind == 9:
        inner, count = _read(fh, "I"), _read(fh, "Q")
        if inner in _SCALARS:
            fh.seek(struct.calcsize("<" + _SCALARS[inner]) * count, 1)
        else:
            for _ in range(count):
                _skip_value(fh, inner)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def gguf_tensors(path: Path | str) -> list[tuple[str, tuple[int, ...], str]]:
    """[(name, shape as ggml orders it (ne0 first), ggml type name)] of every tensor."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        _version, n_tensors, n_kv = _read(fh, "I"), _read(fh, "Q"), _read(fh, "Q")
        for _ in range(n_kv):
            _skip_string(fh)
            _skip_value(fh, _read(fh, "I"))
        out = []
        for _ in range(n_tensors):
            name = fh.read(_read(fh, "Q")).decode("utf-8", "replace")
            dims = tuple(_read(fh, "Q") for _ in range(_read(fh, "I")))
            kind = _read(fh, "I")
            _read(fh, "Q")  # offset
            out.append((name, dims, GGML_TYPES.get(kind, f"type{kind}")))
    return out


def tensor_summary(path: Path | str, qtype: QuantType) -> dict[str, Any]:
    """What the quantizer wrote: tensors per ggml type, and the quantized tensors outside the
    type's mix (llama.cpp's per-tensor fallback, e.g. q4_K -> q5_0 on a 64-wide row)."""
    tensors = gguf_tensors(path)
    types = Counter(kind for _name, _dims, kind in tensors)
    fallback = [name for name, _dims, kind in tensors if kind not in UNQUANTIZED and kind not in qtype.mix]
    return {
        "tensor_types": dict(sorted(types.items())),
        "tensors": len(tensors),
        "quantized_tensors": sum(n for k, n in types.items() if k not in UNQUANTIZED),
        "fallback_tensors": len(fallback),
        "fallback_examples": fallback[:3],
    }


# The verdict
@dataclass(frozen=True)
class TypeVerdict:
    status: str  # pass / degraded / fail
    failure_class: str | None
    message: str
    metrics: dict[str, Any]


def judge(
    qtype: QuantType, baseline: list[parity.Completion], quantized: list[parity.Completion]
) -> TypeVerdict:
    """One type: its completions against the unquantized GGUF's, by the parity rule with the
    type's tolerance. Equal within the float floor: pass; within the tolerance: degraded
    (quantization drift); beyond it: fail (wrong_output)."""
    result = parity.check_logprobs_close(
        baseline, quantized, top_k=qtype.top_k, max_logprob_gap=qtype.max_logprob_gap, noise=0.0
    )
    metrics = {
        k: result.metrics[k]
        for k in ("first_divergence", "prompts_diverged", "max_logprob_gap", "tokens_compared", "top_k")
    }
    metrics["tolerance"] = {"top_k": qtype.top_k, "max_logprob_gap": qtype.max_logprob_gap}
    if result.status == "pass":
        return TypeVerdict(
            "pass", None, result.message.replace("the reference", "the unquantized GGUF"), metrics
        )
    if result.status == "degraded":
        return TypeVerdict(
            "degraded",
            QUANTIZATION_DRIFT,
            f"quantization drift within tolerance (top-{qtype.top_k}, "
            f"{qtype.max_logprob_gap:g} nats): {result.message}",
            metrics,
        )
    return TypeVerdict(
        "fail",
        result.failure_class,
        f"beyond the {qtype.name} tolerance (top-{qtype.top_k}, "
        f"{qtype.max_logprob_gap:g} nats): {result.message}",
        metrics,
    )


STATUS_ORDER = ("fail", "degraded", "pass")  # worst first
# The per-type facts kept as the record's flat metrics (`<TYPE>.<fact>`; the contract's
# metrics are scalars), the whole of them in its output.
FLAT_FACTS = (
    "status",
    "failure_class",
    "quantize_s",
    "load_s",
    "gguf_bytes",
    "quantized_tensors",
    "fallback_tensors",
    "first_divergence",
    "max_logprob_gap",
    "tokens_compared",
    "top_k",
)


def flat_metrics(per_type: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """{"Q8_0.quantize_s": 0.02, "Q8_0.tensor_types": "F32:5,Q8_0:16", ...}: scalars only."""
    out: dict[str, Any] = {"types": ",".join(per_type)}
    for name, facts in per_type.items():
        out.update({f"{name}.{k}": facts.get(k) for k in FLAT_FACTS if k in facts})
        if facts.get("tensor_types"):
            out[f"{name}.tensor_types"] = ",".join(f"{k}:{v}" for k, v in facts["tensor_types"].items())
    return out


def fallback_note(facts: Mapping[str, Any]) -> str:
    """`, 13 of 16 quantized tensors outside its mix (llama.cpp's per-tensor fallback)`, or ''."""
    n, of = facts.get("fallback_tensors"), facts.get("quantized_tensors")
    if not n:
        return ""
    return f", {n} of {of} quantized tensors outside its mix (llama.cpp's per-tensor fallback)"


def combine(
    verdicts: Mapping[str, TypeVerdict], facts: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[str, str | None, str]:
    """The stage's (status, failure_class, message) over its types: the worst type decides;
    the message names every type's verdict (and its fallback tensors, from `facts`)."""
    if not verdicts:
        raise ValueError("no quantization type was judged")
    worst = min(verdicts.items(), key=lambda kv: STATUS_ORDER.index(kv[1].status))
    parts = [
        f"{name} {v.status}"
        + (f" ({v.failure_class})" if v.failure_class else "")
        + fallback_note((facts or {}).get(name) or {})
        for name, v in verdicts.items()
    ]
    head = "; ".join(parts)
    if worst[1].status == "pass":
        return "pass", None, head
    return worst[1].status, worst[1].failure_class, f"{head}; {worst[0]}: {worst[1].message}"
