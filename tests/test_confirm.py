"""Confirmed reds: every red's bare reproduction re-decides it without dayone.

Pure comparison first (exhaustive, fast), then real engines: a red that is the engine's comes
out confirmed; a red injected on our side, whose bare command passes, comes out
error / harness_disagrees with both logs kept.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import build_fixtures, json_lines, run_dayone
from probes import parity, reproduce
from probes.confirmation import BareOutcome, HARNESS_DISAGREES, NO_VERDICT_MARK, decide, normalise
from probes.engines import ENGINES, public_engines

ARCH_LINE = (
    "ValueError: The checkpoint you are trying to load has model type `zorb` but "
    "Transformers does not recognize this architecture."
)


def red(status="fail", klass="unsupported_architecture", message=ARCH_LINE, engine="transformers"):
    return {
        "status": status,
        "failure_class": klass,
        "message": message,
        "stage": "load",
        "engine": {"name": engine, "version": "1"},
        "model": {"id": "m"},
    }


def bare(rc=1, log="", timed_out=False, oom=False):
    return BareOutcome(rc, timed_out, oom, log)


# The decision (pure)


def test_the_same_failure_bare_is_confirmed():
    c = decide(red(), f"Traceback\n{ARCH_LINE}\n", bare(1, f"noise at 0x7f00ab\n{ARCH_LINE}\n"))
    assert (c.confirmed, c.verdict, c.bare_status) == (True, "confirmed", "fail")
    assert c.bare_line == c.probe_line == ARCH_LINE


def test_addresses_numbers_and_paths_do_not_make_a_difference():
    probe = "RuntimeError: mmap of /tmp/run1/model.gguf failed at 0x7f12 after 4096 bytes"
    again = "RuntimeError: mmap of /var/x/y.gguf failed at 0xdead after 8192 bytes"
    assert normalise(probe) == normalise(again)
    c = decide(red(klass="unknown", message=probe), probe, bare(1, again))
    assert c.confirmed is True


@pytest.mark.parametrize("status", ["timeout", "oom"])
def test_timeout_and_oom_confirm_themselves(status):
    c = decide(
        red(status, status if status == "timeout" else "out_of_memory", "killed"),
        "",
        bare(None, "", timed_out=status == "timeout", oom=status == "oom"),
    )
    assert (c.confirmed, c.bare_status) == (True, status)


@pytest.mark.parametrize("status", ["fail", "timeout", "oom"])
def test_a_bare_pass_means_the_harness_disagrees(status):
    c = decide(red(status), ARCH_LINE, bare(0, "dayone-bare: pass: the stage passes"))
    assert (c.confirmed, c.verdict) == (False, HARNESS_DISAGREES)
    assert status in c.message and "passes" in c.message


def test_a_different_failure_keeps_the_red_unconfirmed_with_both_lines():
    other = "ImportError: cannot import name 'Foo' from 'bar'"
    c = decide(red(), ARCH_LINE, bare(1, other))
    assert (c.confirmed, c.verdict) == (False, "differs")
    assert c.probe_line == ARCH_LINE and c.bare_line == other
    assert ARCH_LINE in c.message and other in c.message


def test_the_bare_scripts_own_reason_is_its_line_where_the_engine_says_nothing():
    # A converter that "succeeds" with an empty GGUF: only the probe's check (and the bare
    # script's copy of it) says why, in the engine's stage words.
    said = "the converter wrote a GGUF with no tensors: the model directory has no weights"
    exported = "INFO:hf-to-gguf:Model successfully exported to /x/bare-model.gguf"
    c = decide(
        red(klass="corrupt_or_missing_weights", message=said, engine="llamacpp"),
        f"{exported}\ndayone: stage convert failed: {said}\n",
        bare(1, f"{exported}\ndayone-bare: the converter wrote a GGUF with no tensors\n"),
    )
    assert (c.confirmed, c.verdict, c.bare_failure_class) == (True, "confirmed", "corrupt_or_missing_weights")
    silent = decide(
        red(klass="unknown", message="no output", engine="llamacpp"),
        "no output",
        bare(1, "dayone-bare: the served answer was empty"),
    )
    assert silent.bare_line == "dayone-bare: the served answer was empty"


def test_a_sets_order_and_a_workers_prefix_make_no_difference():
    # Python prints a set in hash order, another order on another run (SGLang, nemotron_h);
    # vLLM's worker relays the same exception as `[rank0]: ...` (phimoe on the fallback).
    probe = "ValueError: bad types: {'full_attention', 'linear_attention'}. One of: {'mlp', 'moe'}"
    again = "ValueError: bad types: {'linear_attention', 'full_attention'}. One of: {'moe', 'mlp'}"
    assert decide(red(klass="unknown", message=probe), probe, bare(1, again)).confirmed is True
    unpack = "ValueError: too many values to unpack (expected 3)"
    relayed = f"dayone-bare: loaded: X\n[rank0]: Traceback (most recent call last):\n[rank0]: {unpack}\n"
    c = decide(red(klass="unknown", message=unpack, engine="vllm"), unpack, bare(1, relayed))
    assert (c.confirmed, c.bare_line) == (True, unpack)


def test_a_set_cut_short_with_its_line_makes_no_difference():
    # vLLM lists a checkpoint's parameters as a set of hundreds of names; the telling line is
    # cut at 2000 characters, so two runs keep different items of it (qwen3_5 on vLLM).
    head = "ValueError: There is no module or parameter named 'model' in X. The available are: "
    names = [f"'layers.{i}.weight'" for i in range(300)]
    probe = (head + "{" + ", ".join(names))[:2000]
    again = (head + "{" + ", ".join(reversed(names)))[:2000]
    assert decide(red(klass="unknown", message=probe), probe, bare(1, again)).confirmed is True
    other = "ValueError: There is no module or parameter named 'lm_head' in X. The available are: {"
    assert (
        decide(red(klass="unknown", message=probe), probe, bare(1, other + ", ".join(names))).confirmed
        is False
    )


@pytest.mark.parametrize("probe,bare_log", [("fail", "timeout"), ("timeout", "oom"), ("oom", "fail")])
def test_another_status_is_not_a_confirmation(probe, bare_log):
    b = bare(
        None if bare_log != "fail" else 1, ARCH_LINE, timed_out=bare_log == "timeout", oom=bare_log == "oom"
    )
    c = decide(red(probe), ARCH_LINE, b)
    assert c.confirmed is False and c.verdict == "differs"


def test_wrong_output_needs_the_same_divergent_tokens():
    line = (
        "dayone: parity failed: 'The capital of France is' diverges at token 3: token 17 "
        "vs reference 42, not within each other's top-5"
    )
    same = line.replace("dayone:", "dayone-bare:")
    other = line.replace("token 17", "token 18")
    r = red(klass="wrong_output", message=line[len("dayone: ") :])
    assert decide(r, line, bare(1, same)).confirmed is True
    assert decide(r, line, bare(1, other)).confirmed is False


def test_a_parity_red_is_judged_by_its_own_divergence_not_a_later_stages():
    # One probe log holds every stage: llama.cpp's quantize stage compares its quantized copies
    # after parity, and its divergence (another prompt, other tokens) is the log's last.
    own = (
        "parity failed: 'The capital of France is' diverges at token 1: token 17 vs "
        "reference 70, not within each other's top-5"
    )
    later = (
        "dayone: stage quantize failed: beyond the Q4_K_M tolerance (top-20, 2 nats): "
        "parity failed: 'Once upon a time,' diverges at token 2: token 416 vs reference 361"
    )
    log = f"dayone: {own}\n...\n{later}\n"
    r = {**red(klass="wrong_output", message=own, engine="llamacpp"), "stage": "parity"}
    c = decide(r, log, bare(1, f"dayone-bare: {own}\n"))
    assert (c.confirmed, c.verdict, c.probe_line) == (True, "confirmed", own)
    # quantize, the log's last stage: its summary message is not a line, its log line is
    why = later.removeprefix("dayone: stage quantize failed: ")
    summary = f"Q8_0 pass; Q4_K_M fail (wrong_output), 4 of 43 tensors outside its mix; Q4_K_M: {why}"
    q = {**red(klass="wrong_output", message=summary, engine="llamacpp"), "stage": "quantize"}
    c = decide(q, log, bare(1, f"dayone-bare: {why}\n"))
    assert (c.confirmed, c.verdict) == (True, "confirmed")


def test_no_verdict_is_neither_confirmed_nor_refuted():
    c = decide(red(), ARCH_LINE, bare(3, f"{NO_VERDICT_MARK}: random weights ..."))
    assert (c.confirmed, c.verdict) == (None, "no_verdict")
    # exit 3 without our marker is an ordinary failure of the engine
    assert decide(red(), ARCH_LINE, bare(3, ARCH_LINE)).confirmed is True


def test_a_signal_is_a_crash_on_both_sides():
    r = red(klass="crash", message="engine died (killed by SIGSEGV) without a recognisable message")
    assert decide(r, "Fatal Python error: Segmentation fault", bare(-11, "")).confirmed is True


# The scripts


def test_every_stage_of_every_public_engine_has_a_bare_script(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    for engine in public_engines():
        stages = list(ENGINES[engine].stages)
        cmds = reproduce.write_scripts(engine, stages, model, tmp_path / engine, "/env/bin/python")
        assert set(cmds) == set(stages)
        for stage, cmd in cmds.items():
            script = tmp_path / engine / f"reproduce-{stage}.py"
            assert cmd.endswith(str(script)) and "/env/bin/python" in cmd
            assert "PYTHONPATH" not in cmd and "probes.child" not in cmd
            text = script.read_text()
            compile(text, str(script), "exec")
            assert "import probes" not in text and "from probes" not in text
            assert f"STAGE = {stage!r}" in text


def test_scripts_written_from_many_threads_are_whole(tmp_path):
    """Probes run side by side write their scripts at once; the embedded rules are parsed
    from source, which CPython 3.11 does not do safely from two threads."""
    from concurrent.futures import ThreadPoolExecutor

    reproduce._embedded_source.cache_clear()
    values = {"MODEL": "m", "STAGE": "load"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        texts = list(pool.map(lambda _i: reproduce.script_text("transformers", "load", values), range(32)))
    assert len(set(texts)) == 1 and "def check_logprobs_close" in texts[0]


def test_the_script_judges_parity_by_the_probe_rule(tmp_path):
    """The rule written into the script gives the verdict probes.parity gives."""
    text = reproduce.script_text(
        "vllm", "parity", {"MODEL": "m", "TOP_K": 2, "MAX_LOGPROB_GAP": parity.MAX_LOGPROB_GAP}
    )
    head = text.split("# The helpers every bare reproduction shares")[0]
    ns: dict = {}
    exec(compile(head, "bare", "exec"), ns)
    ref = [
        {
            "prompt": "p",
            "prompt_ids": [1],
            "token_ids": [5, 6, 7],
            "top_logprobs": [[[5, -0.1], [9, -2.0]], [[6, -0.2], [8, -3.0]], [[7, -0.1], [3, -4.0]]],
        }
    ]
    for got_ids in ([5, 6, 7], [5, 8, 7], [5, 4, 7]):
        got = [
            {
                **ref[0],
                "token_ids": got_ids,
                "top_logprobs": [[[t, -0.1], [s, -2.0]] for t, s in zip(got_ids, [9, 6, 3])],
            }
        ]
        ours = parity.check_logprobs_close(ref, got, top_k=2)
        theirs = ns["check_logprobs_close"](ref, got, top_k=2)
        assert (theirs.status, theirs.message) == (ours.status, ours.message)


# Real engines


@pytest.fixture(scope="module")
def fixtures(tf_env, tmp_path_factory):
    return build_fixtures(
        tf_env, tmp_path_factory.mktemp("confirm-fixtures"), ["llama", "broken-unknown-arch"]
    )


def test_an_engine_red_is_confirmed_bare_and_stored(fixtures, tmp_path, validate_record):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    proc = run_dayone(
        "probe",
        str(fixtures / "broken-unknown-arch"),
        "--engine",
        "transformers",
        "--json",
        "--confirm",
        "--db",
        db,
    )
    load = json_lines(proc.stdout)[0]
    validate_record(load)
    assert (load["status"], load["failure_class"], load["confirmed"]) == (
        "fail",
        "unsupported_architecture",
        True,
    )
    c = load["confirmation"]
    assert c["verdict"] == "confirmed" and "does not recognize this architecture" in c["bare_line"]
    assert Path(c["log_path"]).exists() and Path(c["probe_log_path"]).exists()
    assert "does not recognize" in Path(c["log_path"]).read_text()
    stored = json_lines(run_dayone("results", "--json", "--stage", "load", "--db", db).stdout)
    assert stored[0]["confirmed"] is True


def test_a_red_of_ours_is_harness_disagrees_with_both_logs(fixtures, tmp_path, validate_record):
    """A healthy model's load, misjudged red on our side (as a broken harness would): the bare
    command passes, so the record becomes error / harness_disagrees, stored over the red."""
    from matrix import confirm, probing

    db = f"sqlite:///{tmp_path / 'h.db'}"
    records = probing.probe(fixtures / "llama", "transformers", None, ["load"], say=lambda _m: None)
    assert records[0]["status"] == "pass"
    injected = {
        **records[0],
        "status": "fail",
        "failure_class": "unknown",
        "message": "harness: the probe misread the engine",
    }
    run_dayone("ingest", _jsonl(tmp_path / "red.jsonl", [injected]), "--db", db)
    proc = run_dayone("confirm", "--json", "--db", db)
    out = json_lines(proc.stdout)[0]
    validate_record(out)
    assert (out["status"], out["failure_class"], out["confirmed"]) == ("error", HARNESS_DISAGREES, False)
    c = out["confirmation"]
    assert (c["probe_status"], c["verdict"]) == ("fail", "harness_disagrees")
    assert Path(c["log_path"]).exists() and Path(c["probe_log_path"]).exists()
    assert "dayone-bare: pass" in Path(c["log_path"]).read_text()
    # stored over the red (one row), and confirming again finds nothing left to do
    stored = json_lines(run_dayone("results", "--json", "--db", db).stdout)
    assert [(r["status"], r["failure_class"]) for r in stored] == [("error", HARNESS_DISAGREES)]
    assert "no unconfirmed reds" in run_dayone("confirm", "--db", db).stderr
    assert confirm.needs_confirmation(stored[0]) is False


def test_pages_say_confirmed_bare(fixtures, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app

    db = f"sqlite:///{tmp_path / 'p.db'}"
    run_dayone(
        "probe",
        str(fixtures / "broken-unknown-arch"),
        "--engine",
        "transformers",
        "--model-id",
        "t/broken",
        "--stage",
        "load",
        "--db",
        db,
    )
    with TestClient(create_app(db)) as client:
        before = client.get("/cells/t/broken/transformers.json").json()
        assert before["history"][0]["confirmed"] is None
        assert "not checked bare" in client.get("/cells/t/broken/transformers").text
        run_dayone("confirm", "--db", db)
        cell = client.get("/cells/t/broken/transformers.json").json()
        assert cell["history"][0]["bare"] == "confirmed bare"
        assert cell["latest_failure"]["bare_log_path"]
        assert "confirmed bare" in client.get("/cells/t/broken/transformers").text
        model = client.get("/models/t/broken.json").json()
        assert model["cells"]["transformers"]["stages"]["load"]["confirmed"] is True
        assert "confirmed bare" in client.get("/models/t/broken").text


def _jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.mark.slow
def test_llamacpp_converter_red_is_confirmed(fixtures):
    from matrix import confirm, probing

    records = probing.probe(
        fixtures / "broken-unknown-arch", "llamacpp", None, ["convert"], say=lambda _m: None
    )
    out = confirm.confirm_records(records, say=lambda _m: None)[0]
    assert (out["status"], out["failure_class"], out["confirmed"]) == (
        "fail",
        "conversion_unknown_architecture",
        True,
    ), out.get("confirmation")


@pytest.mark.slow
def test_vllm_red_is_confirmed(fixtures):
    from matrix import confirm, probing

    records = probing.probe(fixtures / "broken-unknown-arch", "vllm", None, ["load"], say=lambda _m: None)
    assert records[0]["status"] == "fail", records[0]
    out = confirm.confirm_records(records, say=lambda _m: None)[0]
    assert out["confirmed"] is True, out.get("confirmation")


def test_confirm_again_takes_back_the_reds_bare_runs_did_not_confirm(tmp_path):
    from matrix import queries
    from matrix.ingest import ingest_records
    from matrix.store import open_store
    from test_reclassify import record

    unchecked = record("org/a", "vllm", "load", "fail", failure_class="unknown", message="x")
    same = {
        **record("org/b", "vllm", "load", "fail", failure_class="unknown", message="x"),
        "confirmed": True,
        "confirmation": {"confirmed": True, "verdict": "confirmed", "message": "same"},
    }
    other = {
        **record("org/c", "vllm", "load", "fail", failure_class="unknown", message="x"),
        "confirmed": False,
        "confirmation": {"confirmed": False, "verdict": "differs", "message": "other"},
    }
    store = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    with store.writing() as session:
        assert ingest_records(session, [unchecked, same, other]).inserted == 3
    with store.session() as session:
        once = queries.unconfirmed_reds(session)
        again = queries.unconfirmed_reds(session, again=True)
    store.close()
    assert [r["model"]["id"] for r in once] == ["org/a"]
    assert sorted(r["model"]["id"] for r in again) == ["org/a", "org/c"]
    assert all("confirmation" not in r and "confirmed" not in r for r in again)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["transformers", "peft", "trl"])
def test_a_green_is_green_bare_too(fixtures, engine):
    # The bare scripts run only for reds in production, so drift between a script and its probe
    # (an argument the probe sets and the script forgets) would show only as a false
    # "differs": every passing stage's reproduce command must pass alone as well.
    proc = run_dayone("probe", str(fixtures / "llama"), "--engine", engine, "--json", "--no-store")
    records = [r for r in json_lines(proc.stdout) if r["status"] == "pass"]
    assert records, proc.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    for r in records:
        bare = subprocess.run(
            ["bash", "-c", r["reproduce"]], capture_output=True, text=True, timeout=900, env=env
        )
        said = [ln for ln in bare.stdout.splitlines() if ln.startswith("dayone-bare:")]
        assert bare.returncode == 0 and said and said[-1].startswith("dayone-bare: pass"), (
            r["stage"],
            bare.returncode,
            bare.stdout[-1500:],
            bare.stderr[-1500:],
        )


def test_a_fine_tune_red_is_the_same_when_its_first_problem_is_of_one_kind():
    # zamba2 x PEFT 0.21.2: the probe tries both runs and lists each; the bare recipe stops at
    # the first failure and words it its own way.
    probe = (
        "dayone: stage finetune failed: dayone-wrong-output: LoRA attention: the trained adapter does not "
        "change the model's output; LoRA all_linear: trains"
    )
    said = (
        "dayone-bare: dayone-wrong-output: LoRA ['q_proj', 'k_proj']: the trained adapter does not "
        "change the output"
    )
    record = {**red(klass="wrong_output", message=probe, engine="peft"), "stage": "finetune"}
    c = decide(record, probe, bare(1, said))
    assert (c.confirmed, c.verdict) == (True, "confirmed"), c.message
    # another kind of problem first is not the same failure
    merged = (
        "dayone-bare: dayone-wrong-output: LoRA all-linear: merged model's logits differ by 0.2 in float32"
    )
    assert decide(record, probe, bare(1, merged)).verdict == "differs"
    # nor is parity's wrong output judged by these words
    parity_red = {**record, "stage": "parity"}
    assert decide(parity_red, probe, bare(1, said)).verdict == "differs"
