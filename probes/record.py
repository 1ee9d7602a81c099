"""Turn what a probe child left behind into result records (the shared contract).

Pure: no I/O. The one place that decides a stage's final status from the child's events, its
exit, the watchdog's verdict and the log's classification, and the one place a record is built
(`make_record`): the probe's, a refusal's, a stage that never ran (the nightly's gated or
unshrinkable models), a skipped stage added after the run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, cast

from probes import __version__
from probes.classify import classify, excerpt, status_for_class, telling_line
from probes.runner import ProbeOutcome
from probes.stages import STAGES, blocked_message, blocker, lets_next_run

SCHEMA_VERSION = 1


class EngineFields(TypedDict, total=False):
    """What a record says of its engine environment: the child's `describe()`, the host's
    environment (a venv's id and resolved packages, or a container image), where the key
    packages were imported from. Only name and version are always there."""

    name: str
    version: str
    environment_id: str | None
    hardware: str | None
    packages: dict[str, str]
    python: str
    resolved_packages: dict[str, str]
    imports: dict[str, dict[str, Any]]
    image: str
    image_digest: str | None
    executor: str
    environment_key: str
    # The lock the environment was installed from: id, resolution (`release`: as on the
    # release day; `today`: as installed today), exclude_newer (the release-day cutoff),
    # resolved_at (matrix/locks.py)
    lock: dict[str, Any]


class Record(TypedDict):
    """One (model revision, engine environment, stage) outcome, as probes/result.schema.json
    describes it. A dict, since records travel as JSON lines (journal, `--json`, ingest);
    `model` is probes.modelinfo.ModelInfo.as_record()."""

    schema_version: int
    run_id: str | None
    model: dict[str, Any]
    engine: EngineFields
    tier: str
    stage: str
    status: str
    failure_class: str | None
    message: str | None
    log_excerpt: str | None
    log_path: str | None
    metrics: dict[str, Any]
    started_at: str
    duration_s: float
    reproduce: str | None
    dayone_version: str
    host: str | None
    output: NotRequired[dict[str, Any]]  # the completions parity compares (generate);
    # quantize: each type's facts
    # A red checked bare (probes/confirmation.py:confirmed_record), added after the probe.
    confirmed: NotRequired[bool | None]
    confirmation: NotRequired[dict[str, Any] | None]


def make_record(
    *,
    model: dict[str, Any],
    engine: EngineFields,
    stage: str,
    status: str,
    started_at: str,
    tier: str = "arch",
    run_id: str | None = None,
    failure_class: str | None = None,
    message: str | None = None,
    log_excerpt: str | None = None,
    log_path: str | None = None,
    metrics: dict[str, Any] | None = None,
    duration_s: float = 0.0,
    reproduce: str | None = None,
    host: str | None = None,
    output: dict[str, Any] | None = None,
) -> Record:
    """The one constructor of a result record: every field, in the contract's order."""
    record: Record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "model": model,
        "engine": engine,
        "tier": tier,
        "stage": stage,
        "status": status,
        "failure_class": failure_class,
        "message": message,
        "log_excerpt": log_excerpt,
        "log_path": log_path,
        "metrics": metrics or {},
        "started_at": started_at,
        "duration_s": duration_s,
        "reproduce": reproduce,
        "dayone_version": __version__,
        "host": host,
    }
    if output:
        record["output"] = output
    return record


def verdict_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a record says happened at its stage, as a store row and a page's history keep it."""
    return {
        "stage": record["stage"],
        "tier": record.get("tier"),
        "status": record["status"],
        "failure_class": record.get("failure_class"),
        "message": record.get("message"),
        "log_excerpt": record.get("log_excerpt"),
        "log_path": record.get("log_path"),
    }


@dataclass(frozen=True)
class Verdict:
    status: str
    failure_class: str | None
    message: str | None
    log_excerpt: str | None = None


def iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).isoformat()


def environment_id(engine: dict[str, Any]) -> str:
    """Stable id of an engine environment from what decides behaviour."""
    key = json.dumps({k: engine.get(k) for k in ("name", "version", "hardware", "packages")}, sort_keys=True)
    return "env-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _signal_name(returncode: int | None) -> str | None:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def classified(log_text: str, engine: str, message: str | None) -> Verdict:
    """A failure the child saw (or a death): class from the log's rules."""
    m = classify(log_text, engine)
    if m.rule is None and message:
        m = classify(message, engine)
    if m.rule is None and not (message and telling_line(message)):
        told = telling_line(log_text)
        if told:  # unknown, and the message is a generic wrapper: say what the engine said
            return Verdict(
                status_for_class(m.failure_class), m.failure_class, told[0], excerpt(log_text, told[1])
            )
    # The rule's matched line says more than a generic last line ("You can update ...").
    return Verdict(
        status_for_class(m.failure_class), m.failure_class, m.line or message, excerpt(log_text, m.line_no)
    )


# Peak resident memory at or above this share of the tightest limit reads as memory pressure.
NEAR_LIMIT = 0.9


def killed_by_sigkill(returncode: int | None) -> bool:
    """SIGKILL as a process's exit (-9) or as a container's exit status (128 + 9)."""
    return returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)


def oom_evidence(outcome: ProbeOutcome) -> str | None:
    """Why a SIGKILL the watchdog did not send was the host's OOM killer, or None (a crash).

    Either sign is enough: the cgroup counted an OOM kill during the run (a container's
    OOMKilled flag is the same fact), or the peak resident memory came near the tightest
    limit the child ran under (OOM kills the cgroup cannot show, e.g. the machine's own)."""
    if outcome.timed_out or outcome.memory_exceeded or outcome.pids_exceeded:
        return None  # the watchdog sent it, for its own reason
    if not killed_by_sigkill(outcome.returncode):
        return None
    if outcome.oom_kills_delta:
        return f"the memory cgroup counted {outcome.oom_kills_delta} OOM kill(s) during the run"
    limit = outcome.memory_limit_mb
    if limit and outcome.peak_rss_mb >= NEAR_LIMIT * limit:
        return (
            f"peak resident memory {outcome.peak_rss_mb:.0f} MB, at "
            f"{outcome.peak_rss_mb / limit:.0%} of {outcome.memory_limit_source or 'the limit'}"
            f" ({limit:.0f} MB)"
        )
    return None


def stage_oom(verdict: Verdict, end: dict[str, Any]) -> Verdict:
    """A stage that failed as a crash (or for no known reason) while the memory cgroup counted
    OOM kills: the host's OOM killer took one of the engine's processes (a worker, a server),
    and the engine reported its death."""
    kills = end.get("oom_kills")
    if verdict.status != "fail" or verdict.failure_class not in ("crash", "unknown") or not kills:
        return verdict
    return Verdict(
        "oom",
        "out_of_memory",
        f"the host's OOM killer took a process of the engine: the memory cgroup "
        f"counted {kills} OOM kill(s) during this stage; the engine said: "
        f"{verdict.message}",
        verdict.log_excerpt,
    )


def death_verdict(outcome: ProbeOutcome, engine: str) -> Verdict:
    """The stage that was running (or about to) when the child ended without reporting it."""
    log = outcome.log_text
    if outcome.infra_error:
        return Verdict("error", "infra", outcome.infra_error, excerpt(log, None))
    if outcome.memory_exceeded:
        return Verdict(
            "oom",
            "out_of_memory",
            f"killed: resident memory {outcome.peak_rss_mb:.0f} MB over the limit",
            excerpt(log, None),
        )
    if outcome.timed_out:
        return Verdict(
            "timeout",
            "timeout",
            f"no answer within {outcome.duration_s:.0f} s; process group killed",
            excerpt(log, None),
        )
    if outcome.pids_exceeded:
        return Verdict(
            "fail",
            "crash",
            "killed: too many processes in the probe's group (fork bomb?)",
            excerpt(log, None),
        )
    if any(e.get("event") == "setup_failed" for e in outcome.events):
        msg = next(e.get("message") for e in outcome.events if e.get("event") == "setup_failed")
        return Verdict("error", "infra", f"engine environment broken: {msg}", excerpt(log, None))
    oom = oom_evidence(outcome)
    if oom:
        return Verdict(
            "oom", "out_of_memory", f"killed by the host's OOM killer (SIGKILL): {oom}", excerpt(log, None)
        )
    sig = _signal_name(outcome.returncode)
    if outcome.returncode == 0:
        return Verdict(
            "error", "infra", "probe child exited without reporting this stage", excerpt(log, None)
        )
    m = classify(log, engine)
    how = f"killed by {sig}" if sig else f"exit status {outcome.returncode}"
    if m.rule is None or m.failure_class == "crash":
        return Verdict(
            "fail", "crash", f"engine died ({how}) without a recognisable message", excerpt(log, None)
        )
    return Verdict(
        status_for_class(m.failure_class),
        m.failure_class,
        f"engine died ({how}): {m.line}",
        excerpt(log, m.line_no),
    )


def host_leak(env_event: dict[str, Any] | None) -> Verdict | None:
    """A key package the child found outside its engine environment came from the host: the
    run says nothing about the engine, it is ours."""
    imports = (env_event or {}).get("imports") or {}
    leaked = sorted(
        f"{name} {info.get('version')} from {info.get('file')}"
        for name, info in imports.items()
        if info.get("in_env") is False
    )
    if not leaked:
        return None
    return Verdict("error", "infra", "host package leaked into the engine environment: " + "; ".join(leaked))


def unlike_release_verdict(verdict: Verdict, unlike_release: str | None) -> Verdict:
    """A red on a copy known to differ from every release of its family where engines look
    (DeepSeek-V4's FP8 / FP4 weights, which a random bf16 copy cannot have) says nothing
    about the engine: no verdict, with what the engine said."""
    if not unlike_release or verdict.status != "fail":
        return verdict
    return Verdict(
        "error",
        "infra",
        f"no verdict: our arch-tier copy is unlike the releases "
        f"({unlike_release[:400]}); the engine said: {verdict.message}",
        verdict.log_excerpt,
    )


def stage_verdicts(
    stages: list[str], outcome: ProbeOutcome, engine: str, unlike_release: str | None = None
) -> list[tuple[str, Verdict, dict[str, Any] | None]]:
    """(stage, verdict, end event or None) for every requested stage, in order.

    A red blocks only the stages that need it (`probes.stages.blocker`); a child that died
    blocks everything after the stage it died in, since nothing ran after it. UNLIKE_RELEASE:
    how the model (an arch-tier copy) differs from its family's releases, if it does."""
    ends = {e["stage"]: e for e in outcome.events if e.get("event") == "end"}
    out: list[tuple[str, Verdict, dict[str, Any] | None]] = []
    statuses: dict[str, str] = {}
    died: tuple[str, str] | None = None
    for stage in stages:
        blocked = died or blocker(stage, statuses)
        if blocked:
            out.append((stage, Verdict("skipped", None, blocked_message(*blocked)), None))
            continue
        end = ends.get(stage)
        if end is None:
            verdict = death_verdict(outcome, engine)
            died = (stage, verdict.status)
        elif end["status"] in ("fail",) and not end.get("failure_class"):
            verdict = stage_oom(classified(outcome.log_text, engine, end.get("message")), end)
        else:
            verdict = Verdict(
                end["status"],
                end.get("failure_class"),
                end.get("message"),
                None if lets_next_run(end["status"]) else excerpt(outcome.log_text, None),
            )
        verdict = unlike_release_verdict(verdict, unlike_release)
        out.append((stage, verdict, end))
        statuses[stage] = verdict.status
    return out


def build_records(
    *,
    stages: list[str],
    outcome: ProbeOutcome,
    engine: str,
    engine_version: str | None,
    model: dict[str, Any],
    tier: str = "arch",
    run_id: str | None = None,
    environment: dict[str, Any] | None = None,
    reproduce: dict[str, str] | None = None,
    host: str | None = None,
) -> list[Record]:
    env_event = next((e for e in outcome.events if e.get("event") == "env"), None)
    eng: dict[str, Any] = dict((env_event or {}).get("engine") or {})
    eng.setdefault("name", engine)
    eng["version"] = eng.get("version") or engine_version or "unknown"
    eng.update({k: v for k, v in (environment or {}).items() if v is not None})
    eng.setdefault("environment_id", environment_id(eng))
    if env_event and env_event.get("imports"):  # where the key packages came from (host leak)
        eng["imports"] = env_event["imports"]
    # The child's describe() is whatever its engine reports: trusted to be the fields above.
    engine_fields = cast(EngineFields, eng)
    starts = {e["stage"]: e.get("t") for e in outcome.events if e.get("event") == "start"}
    leak = host_leak(env_event)
    records = []
    lineage = model.get("lineage")
    unlike = lineage.get("unlike_release") if isinstance(lineage, dict) else None
    for stage, verdict, end in stage_verdicts(
        stages, outcome, engine, unlike if isinstance(unlike, str) else None
    ):
        if leak:  # whatever the stage did, it did with host packages
            verdict = leak
        started = starts.get(stage) or outcome.started_at
        if end is not None:
            duration = float(end.get("duration_s") or 0.0)
        elif stage in starts:
            duration = max(0.0, outcome.started_at + outcome.duration_s - started)
        else:
            duration = 0.0
        records.append(
            make_record(
                model=model,
                engine=engine_fields,
                stage=stage,
                status=verdict.status,
                started_at=iso(started),
                tier=tier,
                run_id=run_id,
                failure_class=verdict.failure_class,
                message=verdict.message,
                log_excerpt=verdict.log_excerpt,
                log_path=str(outcome.log_path),
                metrics=(end or {}).get("metrics"),
                duration_s=round(duration, 4),
                reproduce=(reproduce or {}).get(stage),
                host=host,
                output=(end or {}).get("output"),
            )
        )
    return records


def refused_records(
    *,
    stages: list[str],
    engine: str,
    engine_version: str,
    model: dict[str, Any],
    message: str,
    failure_class: str,
    tier: str = "arch",
    run_id: str | None = None,
    host: str | None = None,
) -> list[Record]:
    """Records for a model the host refuses to hand to any engine (e.g. files that link outside
    its directory): the first stage fails with the reason, the rest are blocked by it."""
    now = iso(time.time())
    first = status_for_class(failure_class)
    return [
        make_record(
            model=model,
            engine={"name": engine, "version": engine_version},
            stage=stage,
            started_at=now,
            tier=tier,
            run_id=run_id,
            host=host,
            status=first if i == 0 else "skipped",
            failure_class=failure_class if i == 0 else None,
            message=message if i == 0 else blocked_message(stages[0], first),
        )
        for i, stage in enumerate(stages)
    ]


def not_applicable_records(
    *,
    stages: list[str],
    engine: str,
    engine_version: str,
    model: dict[str, Any],
    why: str,
    tier: str = "arch",
    run_id: str | None = None,
    host: str | None = None,
) -> list[Record]:
    """Records for a probe that does not apply to the model (an encoder in a map of
    generators): every stage `n/a`, with why; nothing runs."""
    return unrun_records(
        stages=stages,
        model=model,
        engine={"name": engine, "version": engine_version},
        status="n/a",
        message=why,
        started_at=iso(time.time()),
        tier=tier,
        run_id=run_id,
        host=host,
    )


def unrun_records(
    *,
    stages: Iterable[str],
    model: dict[str, Any],
    engine: EngineFields,
    status: str,
    message: str,
    started_at: str,
    tier: str,
    run_id: str | None,
    failure_class: str | None = None,
    reproduce: str | None = None,
    host: str | None = None,
) -> list[Record]:
    """Records for stages that never ran because of something before any engine (the nightly:
    `skipped` for a gated model or one without a config, `error` when our shrink or download
    failed), one per stage, all the same."""
    return [
        make_record(
            model=model,
            engine=engine,
            stage=stage,
            status=status,
            started_at=started_at,
            tier=tier,
            run_id=run_id,
            failure_class=failure_class,
            message=message,
            reproduce=reproduce,
            host=host,
        )
        for stage in stages
    ]


def with_skipped_stage(records: list[Record], stage: str, message: str, started_at: str) -> list[Record]:
    """`records` with `stage` added as `skipped` for `message` (decided by
    probes.stages.skip_message), in probe order: a stage the host took out before the run
    (parity without a reference) still has its record, in the same run, engine and log."""
    first = records[0]
    skipped = make_record(
        model=first["model"],
        engine=first["engine"],
        stage=stage,
        status="skipped",
        message=message,
        started_at=started_at,
        tier=first["tier"],
        run_id=first["run_id"],
        log_path=first["log_path"],
        host=first["host"],
    )
    return sorted([*records, skipped], key=lambda r: STAGES.index(r["stage"]) if r["stage"] in STAGES else 99)
