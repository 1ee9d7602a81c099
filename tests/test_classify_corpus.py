"""The rules against real logs: error logs posted in the engines' issue trackers (vLLM, SGLang,
llama.cpp / llama-cpp-python, transformers, PEFT, TRL, Docker, huggingface_hub), each with the class
its maintainers' answer supports (tests/corpus/logs.jsonl). Prints the accuracy and every miss."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from probes.classify import FAILURE_CLASSES, classify, status_for_class

CORPUS = Path(__file__).with_name("corpus") / "logs.jsonl"
MIN_ACCURACY = 0.95


def cases() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_corpus_is_well_formed():
    rows = cases()
    assert len(rows) >= 80
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["source"] for r in rows}) == len(rows)
    for r in rows:
        assert r["source"].startswith("https://github.com/"), r["id"]
        assert r["class"] in FAILURE_CLASSES and r["class"] != "unknown", r["id"]
        assert r["status"] == status_for_class(r["class"]), r["id"]
        assert r["log"].strip(), r["id"]
    # every family the issue asks for is there
    engines = Counter(r["engine"] for r in rows)
    for engine in ("vllm", "sglang", "llamacpp", "transformers", "peft", "trl", "docker", "huggingface_hub"):
        assert engines[engine] >= 2, engine


def test_accuracy_over_real_logs(capsys):
    rows = cases()
    misses = []
    for r in rows:
        m = classify(r["log"], r["engine"])
        if m.failure_class != r["class"]:
            misses.append(
                f"{r['id']}: expected {r['class']}, got {m.failure_class} (rule {m.rule}: {m.line!r})"
            )
    accuracy = 1 - len(misses) / len(rows)
    with capsys.disabled():
        print(f"\nclassifier accuracy over {len(rows)} real logs: {accuracy:.1%}")
        for miss in misses:
            print("  miss:", miss)
    assert accuracy >= MIN_ACCURACY, misses


def test_no_infrastructure_log_is_ever_an_engine_red():
    wrong = []
    for r in cases():
        if r["class"] != "infra":
            continue
        got = classify(r["log"], r["engine"]).failure_class
        if status_for_class(got) == "fail":
            wrong.append((r["id"], got))
    assert not wrong


@pytest.mark.parametrize(
    "family,klass",
    [
        ("pull access denied", "infra"),
        ("We couldn't connect to 'https://huggingface.co'", "infra"),
        ("larger than the maximum number of tokens that can be stored in KV cache", "out_of_memory"),
        ("aten::_flash_attention_forward", "not_on_cpu"),
    ],
)
def test_families_seen_in_the_wild_are_covered(family, klass):
    rows = [r for r in cases() if family in r["log"]]
    assert rows, family
    assert all(classify(r["log"], r["engine"]).failure_class == klass for r in rows)
