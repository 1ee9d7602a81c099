"""Hostile model directories: dayone answers each with a record, never a crash, and never puts
what lies outside the directory into a record or a log.

The many fuzzed cases (hypothesis) go through the host-side pure parts (probes.modelinfo, record
building against the contract); a handful of representative ones through the real transformers
probe (`dayone probe DIR --engine transformers --json`). A canary file outside each directory
holds a secret that must never appear anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.modelinfo import escaping_links, read_model_info
from probes.record import build_records
from probes.runner import ProbeOutcome
from tests.conftest import json_lines, run_dayone
from tests.reliability_report import note

SECRET = f"CANARY-{uuid.uuid4().hex}"

# Strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
config_keys = st.sampled_from(
    [
        "model_type",
        "architectures",
        "hidden_size",
        "num_hidden_layers",
        "vocab_size",
        "auto_map",
        "torch_dtype",
        "quantization_config",
    ]
)
adversarial_configs = st.one_of(
    st.dictionaries(config_keys, json_values, max_size=6).map(json.dumps),
    st.builds(lambda n: "[" * n + "]" * n, st.integers(1000, 200_000)),  # deep nesting
    st.builds(lambda n: json.dumps({"model_type": "x" * n}), st.integers(10**5, 2 * 10**6)),
    st.just(
        json.dumps(
            {
                "hidden_size": 10**12,
                "num_hidden_layers": 10**9,
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
            }
        )
    ),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)
layouts = st.sampled_from(
    [
        "plain",
        "config-links-out",
        "meta-links-out",
        "weights-link-out",
        "dir-links-out",
        "fifo-config",
        "non-utf8-name",
        "huge-tokenizer",
    ]
)


def hostile_dir(root: Path, config: str, meta: object, layout: str) -> Path:
    """Build one hostile model directory next to an outside canary."""
    if root.exists():
        shutil.rmtree(root)
    outside = root / "outside"
    outside.mkdir(parents=True)
    canary = outside / "secret.json"
    canary.write_text(json.dumps({"model_type": SECRET, "id": SECRET, "revision": SECRET}))
    model = root / "model"
    model.mkdir()
    (model / "dayone.json").write_text(json.dumps(meta))
    if layout == "config-links-out":
        (model / "config.json").symlink_to(canary)
    else:
        if layout == "fifo-config":
            os.mkfifo(model / "config.json")
        else:
            (model / "config.json").write_text(config)
    if layout == "meta-links-out":
        (model / "dayone.json").unlink()
        (model / "dayone.json").symlink_to(canary)
    if layout == "weights-link-out":
        (model / "model.safetensors").symlink_to(canary)
    if layout == "dir-links-out":
        (model / "sub").symlink_to(outside, target_is_directory=True)
    if layout == "non-utf8-name":
        with open(os.fsencode(model) + b"/w\xff\xfe.safetensors", "wb") as f:
            f.write(b"\x00" * 16)
    if layout == "huge-tokenizer":
        with open(model / "tokenizer.json", "wb") as f:
            f.truncate(3 * 2**30)  # 3 GiB, sparse
    return model


def fake_outcome(model: Path) -> ProbeOutcome:
    """What a child that died at once leaves: no events, exit status 1, a short log."""
    return ProbeOutcome(
        [], 1, False, False, 0.0, model / "probe.log", "Traceback ...\n", 0.1, 0.0, ["python"]
    )


_tally: Counter = Counter()


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(config=adversarial_configs, meta=json_values, layout=layouts)
def test_fuzzed_model_dirs_give_valid_records_and_never_leak(
    tmp_path_factory, validate_record, config, meta, layout
):
    model = hostile_dir(tmp_path_factory.mktemp("hostile"), config, meta, layout)
    info = read_model_info(model)  # must not raise, must not block
    records = build_records(
        stages=["load", "generate"],
        outcome=fake_outcome(model),
        engine="transformers",
        engine_version="5",
        model=info.as_record(),
    )
    for r in records:
        validate_record(r)
    text = json.dumps(records)
    assert SECRET not in text
    assert records[0]["status"] in ("fail", "error")
    if layout.endswith("links-out"):
        assert escaping_links(model), layout
    _tally[layout] += 1


def test_zz_note_fuzz_figures():
    """Runs after the fuzz test (file order): its figures for docs/reliability.md."""
    assert _tally, "the fuzz test did not run"
    note(
        "hostile",
        "fuzzed model dirs through modelinfo + record building (hypothesis)",
        tried=sum(_tally.values()),
        outcomes=["valid fail record, no leak"] * sum(_tally.values()),
        expected="a valid fail/error record; canary never in it; outside links flagged",
        held=True,
        detail=", ".join(f"{k} {v}" for k, v in sorted(_tally.items())),
    )


# Through the real transformers probe


def probe_json(model: Path, *extra: str) -> tuple[list[dict], str]:
    proc = run_dayone(
        "probe",
        str(model),
        "--engine",
        "transformers",
        "--json",
        "--no-store",
        "--timeout",
        "120",
        "--memory-mb",
        "3000",
        *extra,
        check=False,
        timeout=300,
    )
    records = json_lines(proc.stdout)
    logs = ""
    for r in records:
        if r.get("log_path") and Path(r["log_path"]).is_file():
            logs += Path(r["log_path"]).read_text(errors="replace")
    # The CLI itself must not crash: exit 0 and no traceback of its own on stderr.
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return records, proc.stdout + proc.stderr + logs


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


REAL_CASES = [
    # The engine would follow config.json -> outside and quote it in its error: the host
    # refuses such a directory before any engine starts (matrix/probing.py).
    "config-links-out",
    "absurd-hidden-size",
    "deep-nesting",
    "huge-tokenizer",
]


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_probe_of_a_hostile_model_is_a_record_never_a_leak(
    fixtures_dir, tmp_path, case, validate_record
):
    model = _copy(fixtures_dir / "llama", tmp_path / "model")
    canary = tmp_path / "secret.json"
    canary.write_text(json.dumps({"model_type": SECRET, "architectures": [SECRET]}))
    config = model / "config.json"
    if case == "config-links-out":
        config.unlink()
        config.symlink_to(canary)
    elif case == "absurd-hidden-size":
        data = json.loads(config.read_text())
        data.update(hidden_size=10**12, intermediate_size=10**12)
        config.write_text(json.dumps(data))
    elif case == "deep-nesting":
        data = json.loads(config.read_text())
        config.write_text(json.dumps(data)[:-1] + ', "rope_scaling": ' + "[" * 50_000 + "]" * 50_000 + "}")
    elif case == "huge-tokenizer":
        with open(model / "tokenizer.json", "ab") as f:
            f.truncate(2 * 2**30)  # 2 GiB of NULs after the JSON
    records, everything = probe_json(model)
    statuses = [f"{r['status']}/{r['failure_class']}" for r in records]
    ok = bool(records) and records[0]["status"] in ("fail", "error", "oom") and SECRET not in everything
    note(
        "hostile",
        f"real transformers probe: {case}",
        tried=1,
        outcomes=statuses[:1],
        expected="a fail/error/oom record; canary never in a record or log",
        held=ok,
        detail=(records[0]["message"] or "")[:100] if records else "no record",
    )
    assert records, everything[-2000:]
    for r in records:
        validate_record(r)
    assert records[0]["status"] in ("fail", "error", "oom"), records[0]
    assert SECRET not in everything


# Remote code

MODELING = """\
from pathlib import Path
Path({canary!r}).write_text("remote code ran")
from transformers import LlamaConfig, LlamaForCausalLM


class EvilConfig(LlamaConfig):
    model_type = "evil_llama"


class EvilForCausalLM(LlamaForCausalLM):
    config_class = EvilConfig
"""


@pytest.mark.parametrize("allowed", [False, True])
def test_remote_code_runs_only_when_allowed(fixtures_dir, tmp_path, allowed):
    model = _copy(fixtures_dir / "llama", tmp_path / "model")
    canary = tmp_path / "remote-code-ran"
    (model / "modeling_evil.py").write_text(MODELING.format(canary=str(canary)))
    (model / "configuration_evil.py").write_text(MODELING.format(canary=str(canary)))
    config = json.loads((model / "config.json").read_text())
    config.update(
        model_type="evil_llama",
        architectures=["EvilForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
        },
    )
    (model / "config.json").write_text(json.dumps(config))
    records, everything = probe_json(model, *(["--trust-remote-code"] if allowed else []))
    assert records, everything[-2000:]
    load = records[0]
    got = f"{load['status']}/{load['failure_class']}"
    ran = canary.exists()
    held = ran if allowed else (not ran and got == "fail/remote_code_required")
    note(
        "hostile",
        f"remote code {'allowed' if allowed else 'not allowed'} (auto_map)",
        tried=1,
        outcomes=[f"{got}, code {'ran' if ran else 'did not run'}"],
        expected="runs (canary written)" if allowed else "fail/remote_code_required, canary never written",
        held=held,
    )
    if allowed:
        assert ran, everything[-2000:]
    else:
        assert not ran
        assert got == "fail/remote_code_required", load
