"""The parity rule (vLLM's check_logprobs_close) and the reference cache, as pure functions.

The real-engine side (a GGUF altered after conversion must fail parity) is in
tests/test_llamacpp.py."""

from __future__ import annotations

import json

import pytest

from probes import parity
from probes.outcome import HarnessError
from probes.modelinfo import ModelInfo


def completion(
    prompt: str, tokens: list[int], tops: list[list[tuple[int, float]]], prompt_ids: list[int] | None = None
) -> dict:
    return {
        "prompt": prompt,
        "prompt_ids": prompt_ids or [1, 2, 3],
        "token_ids": tokens,
        "top_logprobs": [[list(p) for p in step] for step in tops],
    }


# Three steps; each top list is best first. Token 10 wins every step.
REF_TOPS = [
    [(10, -0.1), (11, -2.5), (12, -3.0)],
    [(10, -0.2), (12, -2.0), (11, -2.2)],
    [(10, -0.3), (11, -1.9), (13, -4.0)],
]
REF = [completion("p", [10, 10, 10], REF_TOPS)]


def test_identical_output_passes_with_its_numbers():
    result = parity.check_logprobs_close(REF, [completion("p", [10, 10, 10], REF_TOPS)])
    assert result.status == "pass" and result.failure_class is None
    assert result.metrics == {
        "prompts_compared": 1,
        "tokens_compared": 3,
        "first_divergence": None,
        "prompts_diverged": 0,
        "max_logprob_gap": 0.0,
        "logprob_tolerance": None,
        "reference_noise": None,
        "top_k": 3,
    }


def test_divergence_within_each_others_top_k_is_degraded():
    # Step 1: the engine picks 12, which the reference ranks second; the engine ranks 10 second.
    got_tops = [REF_TOPS[0], [(12, -0.25), (10, -0.3), (11, -2.2)], [(10, -0.1)] * 3]
    result = parity.check_logprobs_close(REF, [completion("p", [10, 12, 10], got_tops)])
    assert (result.status, result.failure_class) == ("degraded", "precision_drift")
    assert result.message.startswith("precision drift:")
    assert result.metrics["first_divergence"] == 1
    assert result.metrics["tokens_compared"] == 2  # comparison stops where they diverge
    assert result.details[0]["within_top_k"] is True


def test_divergence_outside_top_k_fails_as_wrong_output():
    got_tops = [[(99, -0.01), (98, -5.0), (97, -6.0)]] + REF_TOPS[1:]
    result = parity.check_logprobs_close(REF, [completion("p", [99, 10, 10], got_tops)])
    assert (result.status, result.failure_class) == ("fail", "wrong_output")
    assert result.metrics["first_divergence"] == 0
    assert "parity failed" in result.message and "not within" in result.message


def test_only_one_side_in_the_others_top_k_still_fails():
    # The engine's token is in the reference's top-k, but the reference's is not in the engine's.
    got_tops = [[(11, -0.1), (50, -2.0), (51, -3.0)]] + REF_TOPS[1:]
    result = parity.check_logprobs_close(REF, [completion("p", [11, 10, 10], got_tops)])
    assert result.status == "fail"


def test_same_tokens_with_far_off_logprobs_fail():
    # Scaled logits keep the argmax: the token rule alone would pass this.
    scaled = [[(t, lp * 4) for t, lp in step] for step in REF_TOPS]
    result = parity.check_logprobs_close(REF, [completion("p", [10, 10, 10], scaled)])
    assert (result.status, result.failure_class) == ("fail", "wrong_output")
    assert result.metrics["first_divergence"] is None
    assert result.metrics["max_logprob_gap"] == pytest.approx(16.0 - 4.0)  # token 13, step 2
    assert "logprobs of agreeing tokens" in result.message


def test_small_logprob_noise_passes_and_is_reported():
    noisy = [[(t, lp + 0.05) for t, lp in step] for step in REF_TOPS]
    result = parity.check_logprobs_close(REF, [completion("p", [10, 10, 10], noisy)])
    assert result.status == "pass"
    assert result.metrics["max_logprob_gap"] == pytest.approx(0.05)


def test_a_shorter_output_fails():
    result = parity.check_logprobs_close(REF, [completion("p", [10], REF_TOPS[:1])])
    assert (result.status, result.failure_class) == ("fail", "wrong_output")
    assert result.metrics["first_divergence"] == 1


def test_different_prompt_tokens_are_a_tokenizer_failure():
    got = completion("p", [10, 10, 10], REF_TOPS, prompt_ids=[1, 2, 4])
    result = parity.check_logprobs_close(REF, [got])
    assert (result.status, result.failure_class) == ("fail", "tokenizer_or_template")


def test_prompts_pair_by_text_and_a_missing_one_is_our_error():
    other = completion("q", [10, 10, 10], REF_TOPS)
    ok = parity.check_logprobs_close(REF, [other, completion("p", [10, 10, 10], REF_TOPS)])
    assert ok.status == "pass" and ok.metrics["prompts_compared"] == 1
    with pytest.raises(ValueError, match="lacks reference prompt"):
        parity.check_logprobs_close(REF, [other])


def test_worst_prompt_decides_and_first_divergence_is_the_earliest():
    ref = REF + [completion("q", [10, 10, 10], REF_TOPS)]
    bad = [[(99, -0.01), (98, -5.0), (97, -6.0)]] + REF_TOPS[1:]
    within = [REF_TOPS[0], [(12, -0.25), (10, -0.3), (11, -2.2)], REF_TOPS[2]]
    got = [completion("p", [10, 12, 10], within), completion("q", [99, 10, 10], bad)]
    result = parity.check_logprobs_close(ref, got)
    assert result.status == "fail"
    assert result.metrics["first_divergence"] == 0 and result.metrics["prompts_diverged"] == 2


def test_top_k_is_the_smaller_of_both_sides():
    got_tops = [step[:2] for step in REF_TOPS]
    result = parity.check_logprobs_close(REF, [completion("p", [10, 10, 10], got_tops)])
    assert result.metrics["top_k"] == 2


# The reference cache
def info(revision: str = "abc") -> ModelInfo:
    return ModelInfo(
        id="org/Model-1B", revision=revision, model_type="llama", architecture="LlamaForCausalLM"
    )


def test_reference_path_is_per_revision_and_workload(tmp_path):
    a = parity.reference_path_for(info(), tmp_path)
    assert a == parity.reference_path_for(info().as_record(), tmp_path)  # object or record
    assert a.parent == tmp_path / "references" / "org_Model-1B"
    assert a != parity.reference_path_for(info("def"), tmp_path)
    assert a != parity.reference_path_for(info(), tmp_path, max_new_tokens=8)
    assert a != parity.reference_path_for(info(), tmp_path, prompts=["other"])


def generate_record(status: str = "pass") -> dict:
    return {
        "stage": "generate",
        "status": status,
        "model": {"id": "m"},
        "engine": {"name": "transformers", "version": "5.23.0", "packages": {}},
        "output": {"completions": REF},
    }


def test_reference_round_trip_and_prompt_ids(tmp_path):
    path = parity.write_reference(tmp_path / "r" / "ref.json", generate_record())
    assert parity.load_reference(path) == REF
    assert json.loads(path.read_text())["engine"]["version"] == "5.23.0"
    assert parity.reference_prompt_ids({"reference_path": str(path)}) == {"p": [1, 2, 3]}
    assert parity.reference_prompt_ids({}) == {}
    # A bare generate output is accepted as well.
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"completions": REF}))
    assert parity.load_reference(bare) == REF


def test_a_failed_generate_is_no_reference(tmp_path):
    with pytest.raises(ValueError):
        parity.write_reference(tmp_path / "ref.json", generate_record("fail"))
    assert not (tmp_path / "ref.json").exists()


def test_parity_stage_without_reference_is_our_error(tmp_path):
    with pytest.raises(HarnessError, match="reference"):
        parity.parity_stage({}, REF, 5)
    with pytest.raises(HarnessError, match="unreadable"):
        parity.parity_stage({"reference_path": str(tmp_path / "none.json")}, REF, 5)


def test_parity_stage_outcome(tmp_path):
    path = parity.write_reference(tmp_path / "ref.json", generate_record())
    good = parity.parity_stage({"reference_path": str(path)}, REF, 5)
    assert good.status == "pass" and good.metrics["tokens_compared"] == 3
    wrong = [completion("p", [99, 10, 10], [[(99, -0.01)]] + REF_TOPS[1:])]
    bad = parity.parity_stage({"reference_path": str(path)}, wrong, 5)
    assert (bad.status, bad.failure_class) == ("fail", "wrong_output")
    assert bad.output["details"][0]["first_divergence"] == 0


# The precision horizon: where transformers itself changes with precision


def test_precision_horizons_are_the_first_token_where_float32_leaves_the_reference():
    f32 = [completion("p", [10, 10, 11], REF_TOPS), completion("q", [5, 6], REF_TOPS[:2])]
    released = REF + [completion("q", [5, 6], REF_TOPS[:2])]
    assert parity.precision_horizons(released, f32) == {"p": 2, "q": None}
    shorter = [completion("p", [10, 10], REF_TOPS[:2])]
    assert parity.precision_horizons(REF, shorter) == {"p": 2}


def test_past_the_horizon_a_divergence_is_explained_but_must_stay_in_the_top_k():
    # The engine leaves the reference at token 2 with a token outside its top-k.
    got_tops = REF_TOPS[:2] + [[(77, -0.05), (78, -3.0), (79, -4.0)]]
    got = [completion("p", [10, 10, 77], got_tops)]
    for horizons in (None, {"p": 2}, {"p": 0}, {"p": 3}):
        result = parity.check_logprobs_close(REF, got, horizons=horizons)
        assert (result.status, result.failure_class) == ("fail", "wrong_output"), horizons
    past = parity.check_logprobs_close(REF, got, horizons={"p": 2})
    assert "past the reference's precision horizon" in past.message
    # Within each other's top-k past the horizon: precision drift, and the message says why.
    swap = REF_TOPS[:2] + [[(11, -0.2), (10, -0.25), (13, -4.0)]]
    near = parity.check_logprobs_close(REF, [completion("p", [10, 10, 11], swap)], horizons={"p": 2})
    assert (near.status, near.failure_class) == ("degraded", "precision_drift")
    assert "precision horizon" in near.message and near.details[0]["within_precision_noise"]


def test_garbage_from_the_first_token_is_red_even_with_a_horizon_of_0():
    garbage = [[(90 + i, -0.01), (80 + i, -5.0), (70 + i, -6.0)] for i in range(3)]
    result = parity.check_logprobs_close(
        REF, [completion("p", [90, 91, 92], garbage)], horizons={"p": 0}, noise=0.05
    )
    assert (result.status, result.failure_class) == ("fail", "wrong_output")
    assert result.metrics["first_divergence"] == 0


def test_reference_keeps_its_horizons_and_the_stage_uses_them(tmp_path):
    path = parity.write_reference(tmp_path / "ref.json", generate_record(), {"p": 0})
    assert parity.load_horizons(path) == {"p": 0}
    wrong = [completion("p", [99, 10, 10], [[(99, -0.01)]] + REF_TOPS[1:])]
    outcome = parity.parity_stage({"reference_path": str(path)}, wrong, 5)
    assert (outcome.status, outcome.failure_class) == ("fail", "wrong_output")
    swapped = [completion("p", [11, 10, 10], [[(11, -0.1), (10, -0.2)]] + REF_TOPS[1:])]
    outcome = parity.parity_stage({"reference_path": str(path)}, swapped, 5)
    assert (outcome.status, outcome.failure_class) == ("degraded", "precision_drift")
    old = parity.write_reference(tmp_path / "old.json", generate_record())
    assert parity.load_horizons(old) == {}  # written without: none known


# The logprob tolerance: the reference's own precision noise


def shifted(tops: list[list[tuple[int, float]]], by: float) -> list[list[tuple[int, float]]]:
    return [[(t, lp - by) for t, lp in step] for step in tops]


def test_tolerance_is_a_multiple_of_the_noise_plus_a_floor():
    assert parity.logprob_tolerance(None) is None
    assert parity.logprob_tolerance(0.0) == parity.LOGPROB_FLOOR
    assert parity.logprob_tolerance(0.01) == pytest.approx(
        parity.NOISE_MULTIPLE * 0.01 + parity.LOGPROB_FLOOR
    )
    assert parity.logprob_tolerance(-1.0) == parity.LOGPROB_FLOOR  # never below the floor
    assert parity.logprob_tolerance(0.2) > parity.logprob_tolerance(0.1)


def test_every_token_agrees_but_logprobs_drift_past_the_noise_is_degraded_never_green():
    # A wrong kernel keeps the argmax and moves logprobs by 0.2 nats where bf16 noise is 0.01.
    got = [completion("p", [10, 10, 10], shifted(REF_TOPS, 0.2))]
    result = parity.check_logprobs_close(REF, got, noise=0.01)
    assert (result.status, result.failure_class) == ("degraded", "logprob_drift")
    tolerance = parity.logprob_tolerance(0.01)
    assert result.metrics["max_logprob_gap"] == pytest.approx(0.2)
    assert result.metrics["logprob_tolerance"] == pytest.approx(tolerance)
    assert result.metrics["reference_noise"] == pytest.approx(0.01)
    assert result.metrics["first_divergence"] is None
    assert "logprob drift" in result.message and "0.2000" in result.message
    assert f"{tolerance:.4f}" in result.message and "0.0100" in result.message
    # The same shift where the reference itself moves that much is noise: green.
    assert parity.check_logprobs_close(REF, got, noise=0.1).status == "pass"
    # Unknown noise: only the wrong-output limit holds (nothing to measure drift against).
    assert parity.check_logprobs_close(REF, got).status == "pass"


def test_float32_reference_holds_agreeing_tokens_to_the_floor():
    small = [completion("p", [10, 10, 10], shifted(REF_TOPS, parity.LOGPROB_FLOOR / 2))]
    ok = parity.check_logprobs_close(REF, small, noise=0.0)
    assert ok.status == "pass" and "within" in ok.message
    drift = [completion("p", [10, 10, 10], shifted(REF_TOPS, parity.LOGPROB_FLOOR * 2))]
    assert parity.check_logprobs_close(REF, drift, noise=0.0).failure_class == "logprob_drift"


def test_gaps_no_precision_explains_fail_unless_the_noise_itself_is_that_large():
    got = [completion("p", [10, 10, 10], shifted(REF_TOPS, 2.5))]
    assert parity.check_logprobs_close(REF, got, noise=0.01).failure_class == "wrong_output"
    # A reference that moves 1 nat between bf16 and float32 cannot call 2.5 nats wrong...
    assert parity.check_logprobs_close(REF, got, noise=1.0).status == "pass"
    far = [completion("p", [10, 10, 10], shifted(REF_TOPS, 3.5))]
    assert parity.check_logprobs_close(REF, far, noise=1.0).failure_class == "wrong_output"
    # ... and between its tolerance and the wrong-output limit, drift is amber.
    mid = [completion("p", [10, 10, 10], shifted(REF_TOPS, 1.8))]
    assert parity.check_logprobs_close(REF, mid, noise=0.3).failure_class == "logprob_drift"


def test_drift_and_a_divergence_name_the_drift_and_say_both():
    got_tops = [REF_TOPS[0], [(12, -0.25), (10, -0.3), (11, -2.2)], [(10, -0.1)] * 3]
    got_tops = [[(t, lp - 0.3) for t, lp in step] for step in got_tops[:1]] + got_tops[1:]
    result = parity.check_logprobs_close(REF, [completion("p", [10, 12, 10], got_tops)], noise=0.01)
    assert (result.status, result.failure_class) == ("degraded", "logprob_drift")
    assert "logprob drift" in result.message and "precision drift" in result.message


def test_logprob_noise_is_the_largest_gap_where_the_float32_twin_agrees():
    f32 = [completion("p", [10, 10, 10], shifted(REF_TOPS, 0.01))]
    assert parity.logprob_noise(REF, f32) == pytest.approx(0.01)
    # The twin leaves the reference at token 1: later steps say nothing about noise.
    leaves = shifted(REF_TOPS[:1], 0.02) + [[(12, -0.1), (10, -0.2)], [(99, -9.0)] * 3]
    assert parity.logprob_noise(REF, [completion("p", [10, 12, 99], leaves)]) == pytest.approx(
        0.02
    )  # not the swap at step 1 (1.9 nats), not the steps after it
    assert parity.logprob_noise(REF, [completion("q", [1], REF_TOPS[:1])]) is None
    two = REF + [completion("q", [10, 10, 10], REF_TOPS)]
    assert parity.logprob_noise(
        two, [completion("p", [10, 10, 10], REF_TOPS), completion("q", [10, 10, 10], shifted(REF_TOPS, 0.03))]
    ) == pytest.approx(0.03)


def test_reference_carries_its_noise_and_the_stage_uses_it(tmp_path):
    path = parity.write_reference(tmp_path / "ref.json", generate_record(), {"p": None}, 0.01)
    ref = parity.read_reference(path)
    assert (ref.completions, ref.horizons, ref.noise) == (REF, {"p": None}, 0.01)
    got = [completion("p", [10, 10, 10], shifted(REF_TOPS, 0.2))]
    outcome = parity.parity_stage({"reference_path": str(path)}, got, 5)
    assert (outcome.status, outcome.failure_class) == ("degraded", "logprob_drift")
    assert outcome.metrics["reference_noise"] == 0.01
    f32 = parity.write_reference(tmp_path / "f32.json", generate_record(), None, 0.0)
    assert parity.read_reference(f32).noise == 0.0
    assert parity.read_reference(parity.write_reference(tmp_path / "x.json", generate_record())).noise is None
    with pytest.raises(ValueError, match="non-negative"):
        parity.write_reference(tmp_path / "bad.json", generate_record(), None, -0.1)
    bad = tmp_path / "bad-noise.json"
    bad.write_text(json.dumps({"output": {"completions": REF}, "logprob_noise": "lots"}))
    assert parity.read_reference(bad).noise is None


def test_a_new_reference_format_is_a_new_cache_path(tmp_path, monkeypatch):
    before = parity.reference_path_for(info(), tmp_path)
    monkeypatch.setattr(parity, "REFERENCE_FORMAT", parity.REFERENCE_FORMAT + 1)
    assert parity.reference_path_for(info(), tmp_path) != before


def test_the_reasons_parity_names_are_the_listed_degraded_reasons():
    from probes.stages import DEGRADED_REASONS

    assert {parity.PRECISION_DRIFT, parity.LOGPROB_DRIFT} <= set(DEGRADED_REASONS)


def test_a_divergence_on_a_flat_distribution_says_how_flat():
    """The verdict stays vLLM's rule; the message shows the reference's top-k span there."""
    from probes.parity import check_logprobs_close

    flat = [[7, -5.60], [8, -5.61], [9, -5.62], [10, -5.63], [11, -5.64]]
    ref = {"prompt": "p", "token_ids": [7], "top_logprobs": [flat]}
    got = {
        "prompt": "p",
        "token_ids": [99],
        "top_logprobs": [[[99, -5.5], [98, -5.51], [97, -5.52], [96, -5.53], [95, -5.54]]],
    }
    result = check_logprobs_close([ref], [got], top_k=5, noise=0.0)
    assert (result.status, result.failure_class) == ("fail", "wrong_output")
    assert result.details[0]["reference_top_k_span"] == 0.04
    assert "spans only 0.040 nats" in result.message
