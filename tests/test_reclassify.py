"""`dayone reclassify`: today's rules applied to stored results, on a real SQLite store, through
the CLI, and seen by the site and the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from conftest import run_dayone
from matrix import queries
from matrix.ingest import ingest_records
from matrix.reclassify import decide
from matrix.store import CellLatest, Reclassification, Result, ResultLog, open_store
from probes.classify import rules_version
from probes.runner import LOG_TAIL_BYTES
from service.app import create_app

# real lines, as the engines' trackers show them (tests/corpus/logs.jsonl has their sources)
PULL_DENIED = (
    "docker: Error response from daemon: pull access denied for push, repository does "
    "not exist or may require 'docker login'."
)
KV_CACHE = (
    "ValueError: The model's max seq len (32768) is larger than the maximum number of "
    "tokens that can be stored in KV cache (16816). Try increasing "
    "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
)
CPU_LIMIT = "NotImplementedError: Sparse Attention is not supported on CPU."
BPE = "NotImplementedError: BPE pre-tokenizer was not recognized - update get_vocab_base_pre()"


def stored(
    status="fail",
    failure_class="unknown",
    message="RuntimeError: engine core died",
    engine="vllm",
    excerpt="Traceback ...",
) -> queries.StoredFailure:
    return queries.StoredFailure(1, "org/m", engine, "load", status, failure_class, message, excerpt, None)


@pytest.mark.parametrize(
    "before,log,after",
    [
        # an unknown failure that was ours after all: no longer a red
        (stored(), f"pulling\n{PULL_DENIED}\n", ("error", "infra")),
        # a fact about the hardware
        (stored(), f"INFO profiling\n{KV_CACHE}\n", ("oom", "out_of_memory")),
        # a class split since: the CPU-only limit of an engine
        (stored(failure_class="kernel_or_dtype", message=CPU_LIMIT), CPU_LIMIT, ("needs-gpu", "not_on_cpu")),
        (
            stored(failure_class="conversion_failed", engine="llamacpp", message=BPE),
            BPE,
            ("fail", "conversion_tokenizer"),
        ),
        # a death without a recognisable message then, with one now
        (
            stored(
                failure_class="crash", message="engine died (exit status 1) without a recognisable message"
            ),
            f"x\n{KV_CACHE}\n",
            ("oom", "out_of_memory"),
        ),
    ],
)
def test_newer_rules_change_classes_that_came_from_the_log(before, log, after):
    change = decide(before, log)
    assert change is not None and (change.new_status, change.new_class) == after
    assert (change.old_status, change.old_class) == (before.status, before.failure_class)
    assert change.new_message in log and change.new_message in (change.new_excerpt or "")


@pytest.mark.parametrize(
    "before",
    [
        stored(status="timeout", failure_class="timeout"),  # the watchdog's clock
        stored(status="degraded", failure_class="slow"),  # a measurement
        stored(failure_class="wrong_output"),  # the parity check
        stored(status="error", failure_class="infra", message="engine environment broken: x"),
        stored(status="oom", failure_class="out_of_memory", message="killed: resident memory 9000 MB"),
        stored(failure_class="crash", message="killed: too many processes in the probe's group"),
        stored(status="error", failure_class="corrupt_or_missing_weights"),  # decided elsewhere
        stored(status="error", failure_class="shrink"),  # not a class of the rules at all
        stored(status="pass", failure_class=None),
        stored(status="skipped", failure_class=None),
    ],
)
def test_classes_not_decided_by_the_log_are_never_revised(before):
    assert decide(before, f"{PULL_DENIED}\n{KV_CACHE}\n") is None


def test_a_known_class_never_becomes_unknown_and_the_same_class_is_no_change():
    assert decide(stored(failure_class="kernel_or_dtype"), "nothing the rules know\n") is None
    assert decide(stored(failure_class="infra"), PULL_DENIED) is None
    assert decide(stored(failure_class="out_of_memory", status="oom", message=KV_CACHE), KV_CACHE) is None


def test_the_message_is_read_when_the_log_says_nothing():
    change = decide(stored(message=KV_CACHE, excerpt="old excerpt"), "no log left\n")
    assert (change.new_class, change.new_message, change.new_excerpt) == (
        "out_of_memory",
        KV_CACHE,
        "old excerpt",
    )


# A real store


def record(
    model: str,
    engine: str,
    stage: str,
    status: str,
    *,
    failure_class=None,
    message=None,
    log_path=None,
    log_excerpt=None,
    minute=0,
) -> dict:
    return {
        "schema_version": 1,
        "run_id": "night-1",
        "model": {"id": model, "revision": "r1", "family": "llama"},
        "engine": {"name": engine, "version": "1.0", "hardware": "cpu"},
        "tier": "arch",
        "stage": stage,
        "status": status,
        "failure_class": failure_class,
        "message": message,
        "log_excerpt": log_excerpt,
        "log_path": log_path,
        "metrics": {},
        "started_at": f"2026-11-30T02:{minute:02d}:00Z",
        "duration_s": 1.0,
        "reproduce": f"dayone probe {model} --engine {engine}==1.0",
    }


def unknown_load_failure(model: str, message: str, log: Path) -> dict:
    """A vllm load that failed with nothing the rules knew when it was stored, and its log."""
    return record(model, "vllm", "load", "fail", failure_class="unknown", message=message, log_path=str(log))


@pytest.fixture
def home(tmp_path: Path) -> tuple[str, dict[str, Path]]:
    url = f"sqlite:///{tmp_path / 'dayone.db'}"
    logs = {}
    # a log bigger than the kept tail: the telling line near its end
    noise = "".join(f"INFO step {i} " + "x" * 100 + "\n" for i in range(1500))
    logs["docker"] = tmp_path / "docker.log"
    logs["docker"].write_text(noise + PULL_DENIED + "\nexit 125\n")
    logs["kv"] = tmp_path / "kv.log"
    logs["kv"].write_text("INFO loading\n" + KV_CACHE + "\n")
    logs["gguf"] = tmp_path / "gguf.log"
    logs["gguf"].write_text("INFO:hf-to-gguf:Set model tokenizer\n" + BPE + "\n")
    records = [
        unknown_load_failure("org/a", "RuntimeError: Engine core initialization failed", logs["docker"]),
        record(
            "org/a",
            "vllm",
            "generate",
            "skipped",
            message="blocked by load (fail)",
            log_path=str(logs["docker"]),
            minute=1,
        ),
        unknown_load_failure("org/b", "RuntimeError: Engine core initialization failed", logs["kv"]),
        record(
            "org/c",
            "llamacpp",
            "convert",
            "fail",
            failure_class="conversion_failed",
            message=BPE,
            log_path=str(logs["gguf"]),
        ),
        # its log file never reached this host: the stored excerpt is what is left
        record(
            "org/d",
            "vllm",
            "load",
            "fail",
            failure_class="kernel_or_dtype",
            message="RuntimeError: worker failed",
            log_excerpt=f"Traceback\n{CPU_LIMIT}",
            log_path=str(tmp_path / "gone.log"),
        ),
        record("org/e", "vllm", "load", "pass", log_path=str(logs["kv"])),
        record(
            "org/f",
            "vllm",
            "load",
            "timeout",
            failure_class="timeout",
            message="no answer within 600 s",
            log_path=str(logs["kv"]),
        ),
    ]
    # not a probe's log: a record may name any file of this host
    secret = tmp_path / "secret.txt"
    secret.write_text(KV_CACHE + "\n")
    records.append(unknown_load_failure("org/h", "RuntimeError: x", secret))
    # sent by another host (the ingest API): its path names nothing of ours
    remote = [unknown_load_failure("org/g", "RuntimeError: x", logs["kv"])]
    store = open_store(url)
    with store.writing() as session:
        report = ingest_records(session, records)
        sent = ingest_records(session, remote, keep_logs=False)
    store.close()
    assert report.inserted == len(records) and not report.rejected and sent.inserted == 1
    return url, logs


def rows(url: str) -> dict[str, tuple]:
    store = open_store(url)
    with store.session() as session:
        got = {
            r["model"]["id"]: (r["status"], r["failure_class"], r["message"])
            for r in queries.results(session, stage=None)
            if r["stage"] != "generate"
        }
    store.close()
    return got


def test_ingest_keeps_a_bounded_tail_of_every_failing_log(home):
    url, logs = home
    store = open_store(url)
    with store.session() as session:
        kept = {
            model: (tail, size)
            for model, tail, size in session.execute(
                select(Result.raw["model"]["id"].as_string(), ResultLog.log_tail, ResultLog.log_bytes).join(
                    Result, Result.id == ResultLog.result_pk
                )
            )
        }
    store.close()
    # failing and timed-out results keep theirs; a pass, a skipped stage, a missing file do not
    assert set(kept) == {"org/a", "org/b", "org/c", "org/f"}
    tail, size = kept["org/a"]
    assert size == logs["docker"].stat().st_size > LOG_TAIL_BYTES
    assert len(tail.encode()) <= LOG_TAIL_BYTES and tail.startswith("INFO step ")
    assert PULL_DENIED in tail


def test_reclassify_through_the_cli_the_store_the_site_and_the_api(home):
    url, logs = home
    before = rows(url)
    with TestClient(create_app(url)) as client:
        matrix = client.get("/api/v1/matrix").json()  # a view the server now holds in cache
        cells = {r["model"]: r["cells"] for g in matrix["families"] for r in g["models"]}
        assert cells["org/a"]["vllm"]["status"] == "fail"
        cell_view = client.get("/cells/org/c/llamacpp.json").json()  # cached by the server
        assert cell_view["cell"]["stages"]["convert"]["failure_class"] == "conversion_failed"

        dry = run_dayone("reclassify", "--dry-run", "--db", url)
        assert "would change 4 of 6 stored failures" in dry.stdout
        assert rows(url) == before  # a dry run writes nothing

        logs["docker"].unlink()  # gone since: the tail kept at ingest still says why
        done = run_dayone("reclassify", "--db", url)
        assert f"changed 4 of 6 stored failures (rules {rules_version()})" in done.stdout
        after = rows(url)
        assert after["org/a"] == ("error", "infra", PULL_DENIED)
        assert after["org/b"] == ("oom", "out_of_memory", KV_CACHE)
        assert after["org/c"][:2] == ("fail", "conversion_tokenizer")
        assert after["org/d"][:2] == ("needs-gpu", "not_on_cpu")  # from the stored excerpt
        for untouched in ("org/e", "org/f", "org/g", "org/h"):
            assert after[untouched] == before[untouched]

        # the audit: one row per change, what it was and what it became
        store = open_store(url)
        with store.session() as session:
            history = queries.reclassifications(session)
            assert session.scalar(select(func.count()).select_from(Reclassification)) == 4
            cell = session.scalar(
                select(CellLatest).where(CellLatest.model_id == "org/a", CellLatest.stage == "load")
            )
            assert (cell.status, cell.failure_class) == ("error", "infra")
            # the stage it blocked says so in today's words
            blocked = session.scalar(select(Result).where(Result.stage == "generate"))
            assert blocked.message == blocked.raw["message"] == "blocked by load (error)"
        store.close()
        by_model = {h["model"]: h for h in history}
        assert (
            by_model["org/a"]["old_status"],
            by_model["org/a"]["old_class"],
            by_model["org/a"]["new_status"],
            by_model["org/a"]["new_class"],
        ) == ("fail", "unknown", "error", "infra")
        assert by_model["org/a"]["rule"] == "docker_registry_or_daemon"
        assert {h["rules_version"] for h in history} == {rules_version()}

        # idempotent: the same rules change nothing the second time
        again = run_dayone("reclassify", "--db", url)
        assert "changed 0 of 6 stored failures" in again.stdout
        assert rows(url) == after
        assert "fail (unknown)" in run_dayone("reclassify", "--history", "--db", url).stdout

        # the site and the API show the current class (the server's cached views too)
        matrix = client.get("/api/v1/matrix").json()
        cells = {r["model"]: r["cells"] for g in matrix["families"] for r in g["models"]}
        assert cells["org/a"]["vllm"]["status"] == "error"
        assert cells["org/b"]["vllm"]["status"] == "oom"
        api = client.get("/api/v1/results", params={"model": "org/a"}).json()
        records = api["results"] if isinstance(api, dict) else api
        load = next(r for r in records if r["stage"] == "load")
        assert (load["status"], load["failure_class"]) == ("error", "infra")
        cell_view = client.get("/cells/org/c/llamacpp.json").json()
        assert cell_view["cell"]["stages"]["convert"]["failure_class"] == "conversion_tokenizer"
        page = client.get("/cells/org/c/llamacpp")
        assert page.status_code == 200 and "conversion_tokenizer" in page.text
        assert "not_on_cpu" in json.dumps(client.get("/cells/org/d/vllm.json").json())
