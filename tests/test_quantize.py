"""The quantize stage: llama.cpp's own quantizer on the converted GGUF (Q8_0, Q4_K_M), each
quantized copy loaded and its greedy output judged against the unquantized GGUF's with the type's
tolerance (probes/quantization.json, probes/quantize.py).

Pure rules first (verdicts, the map's `quant` sub-cell, the sweep's stage list); then the real
llama.cpp on the llama fixture: both types within tolerance, the per-tensor fallback of a K-quant
on 64-wide rows recorded from the written GGUF, the bare script agreeing; and a wrong
quantization (another model's weights quantized in place of the converted GGUF) caught as
`wrong_output` and confirmed by its bare reproduction.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import build_fixtures
from probes import quantize
from probes.classify import FAILURE_CLASSES
from probes.stages import ARCH_MAP_STAGES, DEGRADED_REASONS, NEEDS, QUANT_STAGES, blocker

ROOT = Path(__file__).resolve().parent.parent


def completion(prompt: str, tokens: list[int], tops: list[list[tuple[int, float]]]) -> dict:
    return {"prompt": prompt, "prompt_ids": [1, 2], "token_ids": tokens, "top_logprobs": tops}


STEP = [(5, -0.5), (6, -1.5), (7, -2.0), (8, -2.5), (9, -3.0)]
BASE = [completion("p", [5, 5], [STEP, STEP])]


# Data and rules
def test_the_default_types_are_q8_0_and_q4_k_m_with_q8_0_the_tighter():
    types = quantize.quant_types()
    assert quantize.default_types() == ["Q8_0", "Q4_K_M"]
    q8, q4 = types["Q8_0"], types["Q4_K_M"]
    assert q8.top_k <= q4.top_k and q8.max_logprob_gap < q4.max_logprob_gap
    assert q8.ftype == "MOSTLY_Q8_0" and "Q4_K" in q4.mix


def test_an_unknown_type_names_the_known_ones():
    with pytest.raises(ValueError, match="Q8_0"):
        quantize.selected_types({"quant_types": "Q8_0,Q9_X"})
    assert [t.name for t in quantize.selected_types({"quant_types": "Q4_K_M"})] == ["Q4_K_M"]


def test_equal_output_passes_drift_within_tolerance_is_degraded_beyond_fails():
    q8 = quantize.quant_types()["Q8_0"]
    assert quantize.judge(q8, BASE, BASE).status == "pass"
    moved = [(5, -0.9), (6, -1.2), *STEP[2:]]
    drift = quantize.judge(q8, BASE, [completion("p", [5, 5], [moved, moved])])
    assert (drift.status, drift.failure_class) == ("degraded", "quantization_drift")
    assert "quantization drift within tolerance" in drift.message
    far = [(5, -0.5 - 3 * q8.max_logprob_gap), *STEP[1:]]
    beyond = quantize.judge(q8, BASE, [completion("p", [5, 5], [far, far])])
    assert (beyond.status, beyond.failure_class) == ("fail", "wrong_output")
    other = [(300, -0.1), (301, -2.0)]
    wrong = quantize.judge(q8, BASE, [completion("p", [300, 300], [other, other])])
    assert (wrong.status, wrong.failure_class) == ("fail", "wrong_output")
    assert "beyond the Q8_0 tolerance" in wrong.message


def test_the_worst_type_decides_and_every_type_is_named_with_its_fallback():
    ok = quantize.TypeVerdict("pass", None, "equal", {})
    drift = quantize.TypeVerdict("degraded", "quantization_drift", "drift", {})
    status, klass, message = quantize.combine(
        {"Q8_0": ok, "Q4_K_M": drift}, {"Q4_K_M": {"fallback_tensors": 13, "quantized_tensors": 16}}
    )
    assert (status, klass) == ("degraded", "quantization_drift")
    assert message.startswith("Q8_0 pass; Q4_K_M degraded (quantization_drift), 13 of 16")
    assert "per-tensor fallback" in message
    assert quantize.combine({"Q8_0": ok})[:2] == ("pass", None)


def test_the_stage_is_declared_everywhere_it_must_be():
    assert "quantize" in ARCH_MAP_STAGES and QUANT_STAGES == ("quantize",)
    assert NEEDS["quantize"] == ("generate",)
    # a parity red (against transformers) does not block quantizing the GGUF
    assert blocker("quantize", {"generate": "pass", "parity": "fail"}) is None
    assert blocker("quantize", {"generate": "fail"}) == ("generate", "fail")
    assert "quantization_drift" in DEGRADED_REASONS
    assert "quantization_failed" in FAILURE_CLASSES


def test_the_sweep_runs_quantize_unless_told_not_to():
    from matrix.nightly import NightlyOptions
    from matrix.sweep import sweep_stages

    assert "quantize" in sweep_stages(NightlyOptions())
    assert "quantize" not in sweep_stages(NightlyOptions(quantize=False))
    assert "parity" in sweep_stages(NightlyOptions(quantize=False))
    assert "finetune" in sweep_stages(NightlyOptions()) and "finetune" in sweep_stages(
        NightlyOptions(quantize=False)
    )
    assert "finetune" not in sweep_stages(NightlyOptions(finetune=False))


def test_a_quant_red_is_its_own_sub_cell_never_the_engines_status():
    import datetime as dt

    from matrix.archmap import cell_of
    from matrix.summary import Observation

    def obs(stage, status, klass=None):
        return Observation(
            model="arch/llama",
            engine="llamacpp",
            engine_version="0.3.36",
            stage=stage,
            status=status,
            failure_class=klass,
            started_at=dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc),
        )

    cell = cell_of(
        [
            obs("convert", "pass"),
            obs("load", "pass"),
            obs("generate", "pass"),
            obs("parity", "pass"),
            obs("quantize", "fail", "wrong_output"),
        ]
    )
    assert cell.status == "pass" and cell.quant is not None
    assert (cell.quant.status, cell.quant.failure_class) == ("fail", "wrong_output")
    assert cell.label() == "pass; quant fail (wrong_output)"
    assert cell.as_dict()["quant"]["stages"]["quantize"]["status"] == "fail"
    assert "quantize" not in cell.as_dict()["stages"]
    plain = cell_of([obs("load", "pass")])
    assert plain.quant is None and plain.label() == "pass"


# The real llama.cpp
@pytest.fixture(scope="module")
def lc_env():
    import sys

    from matrix.environments import ensure_env

    return ensure_env("llamacpp", say=lambda m: print(m, file=sys.stderr))


@pytest.fixture(scope="module")
def fixtures(tf_env, tmp_path_factory) -> Path:
    return build_fixtures(tf_env, tmp_path_factory.mktemp("quant-fixtures"), ["llama", "qwen3"])


def _probe(model: Path, stages: list[str], logs: Path, options: dict | None = None):
    from matrix import probing

    settings = probing.ProbeSettings(logs_root=logs, options=options or {})
    return {
        r["stage"]: r
        for r in probing.probe(model, "llamacpp", None, stages, settings=settings, say=lambda _m: None)
    }


@pytest.fixture(scope="module")
def quantized(lc_env, fixtures, tmp_path_factory):
    logs = tmp_path_factory.mktemp("quant-logs")
    return _probe(fixtures / "llama", ["convert", "load", "generate", "quantize"], logs), logs


@pytest.mark.slow
def test_each_type_is_quantized_loaded_and_within_its_tolerance(quantized, validate_record):
    records, _logs = quantized
    rec = validate_record(records["quantize"])
    assert [records[s]["status"] for s in ("convert", "load", "generate")] == ["pass"] * 3
    # Measured: Q8_0 drifts 0.30 nats with a greedy swap inside the top-10 on 3 of 4 prompts,
    # Q4_K_M 0.91 nats inside the top-20: amber, named, never red.
    assert rec["status"] in ("pass", "degraded"), rec["message"]
    if rec["status"] == "degraded":
        assert rec["failure_class"] == "quantization_drift"
    types = rec["output"]["types"]
    assert list(types) == ["Q8_0", "Q4_K_M"] and rec["metrics"]["types"] == "Q8_0,Q4_K_M"
    assert rec["metrics"]["Q4_K_M.fallback_tensors"] == types["Q4_K_M"]["fallback_tensors"]
    assert "Q8_0:" in rec["metrics"]["Q8_0.tensor_types"]
    for name, t in types.items():
        assert t["status"] in ("pass", "degraded") and t["quantize_s"] >= 0, (name, t)
        assert t["gguf_bytes"] > 0 and t["tokens_compared"] > 0
    assert types["Q8_0"]["fallback_tensors"] == 0
    assert types["Q8_0"]["tensor_types"].get("Q8_0", 0) == types["Q8_0"]["quantized_tensors"]
    # The fixture's rows are 64 and 128 wide: no q4_K at all, llama.cpp falls back per tensor.
    assert "Q4_K" not in types["Q4_K_M"]["tensor_types"]
    assert types["Q4_K_M"]["fallback_tensors"] == types["Q4_K_M"]["quantized_tensors"] > 0
    assert "per-tensor fallback" in rec["message"]


@pytest.mark.slow
def test_the_tensor_reader_agrees_with_gguf_py(quantized, lc_env):
    records, _logs = quantized
    gguf = Path(records["quantize"]["log_path"]).parent / "model-Q4_K_M.gguf"
    ours = quantize.gguf_tensors(gguf)
    gguf_py = Path(lc_env.python).parent.parent / "llama.cpp-convert" / "gguf-py"
    theirs = subprocess.run(
        [
            lc_env.python,
            "-c",
            f"import sys; sys.path.insert(0, {str(gguf_py)!r})\n"
            f"from gguf import GGUFReader\nfor t in GGUFReader({str(gguf)!r}).tensors:\n"
            "    print(t.name, t.tensor_type.name, *[int(d) for d in t.shape])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert [f"{n} {k} {' '.join(map(str, d))}" for n, d, k in ours] == [line for line in theirs if line]


@pytest.mark.slow
def test_the_bare_script_reproduces_the_verdict(quantized):
    records, _logs = quantized
    proc = subprocess.run(
        records["quantize"]["reproduce"], shell=True, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Q4_K_M:" in proc.stdout and "every type within its tolerance" in proc.stdout


@pytest.mark.slow
def test_a_wrong_quantization_is_caught_and_confirmed_bare(
    lc_env, fixtures, quantized, tmp_path, validate_record
):
    from matrix import confirm

    other = _probe(fixtures / "qwen3", ["convert"], tmp_path / "other")["convert"]
    assert other["status"] == "pass"
    wrong = tmp_path / "qwen3.gguf"
    shutil.copyfile(Path(other["log_path"]).parent / "model.gguf", wrong)
    records = _probe(
        fixtures / "llama", ["convert", "quantize"], tmp_path / "wrong", {"quantize_input": str(wrong)}
    )
    rec = validate_record(records["quantize"])
    assert (rec["status"], rec["failure_class"]) == ("fail", "wrong_output"), rec["message"]
    assert "beyond the Q8_0 tolerance" in rec["message"]
    out = confirm.confirm_records([rec], say=lambda _m: None)[0]
    assert out["confirmed"] is True, out.get("confirmation")
