"""Apply today's failure rules to stored results (`dayone reclassify`).

Rules improve after results are stored: a failure that was `unknown` last week may have a class
today, and a class may have been split. `decide` is the pure decision for one result; `reclassify`
reads each result's log (the probe's log file while it exists, else the end of it that ingest kept,
else the stored excerpt), applies the changes and records each one (old -> new, when, rules).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from matrix import queries
from matrix.store import CellLatest, Reclassification, Result, utc_now
from probes.classify import FAILURE_CLASSES, Rule, classify, excerpt, rules_version, status_for_class
from probes.stages import blocked_message

# Statuses a log rule decides; pass, degraded, timeout and skipped come from elsewhere.
RECLASSIFIED_STATUSES: tuple[str, ...] = ("fail", "error", "oom", "needs-gpu")
# Classes decided by a measurement (parity, throughput), the watchdog's clock or the harness
# itself, not by the log's rules: no rule may overturn them.
NOT_FROM_THE_LOG: frozenset[str] = frozenset({"wrong_output", "slow", "timeout", "infra"})
# How probes.record words a death by the watchdog's memory or process limit.
WATCHDOG_MESSAGE = "killed:"
# A probe's whole log is read up to this size (its end beyond it).
FULL_LOG_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Change:
    result_id: int
    old_status: str
    new_status: str
    old_class: str | None
    new_class: str
    old_message: str | None
    new_message: str | None
    new_excerpt: str | None
    rule: str


def revisable(stored: queries.StoredFailure) -> bool:
    """Whether the result's class came from its log's rules (so newer rules may revise it)."""
    old = stored.failure_class or "unknown"
    return (
        stored.status in RECLASSIFIED_STATUSES
        and old in FAILURE_CLASSES
        and old not in NOT_FROM_THE_LOG
        and not (stored.message or "").startswith(WATCHDOG_MESSAGE)
        # a status its class does not imply was decided by something other than the rules
        and status_for_class(old) == stored.status
    )


def decide(
    stored: queries.StoredFailure, log_text: str, rules: tuple[Rule, ...] | None = None
) -> Change | None:
    """The change today's rules make to one stored result, or None. Only classes that came from
    the log are revisited, and a known class never becomes `unknown`."""
    if not revisable(stored):
        return None
    old = stored.failure_class or "unknown"
    m = classify(log_text, stored.engine, rules)
    from_log = m.rule is not None
    if not from_log and stored.message:
        m = classify(stored.message, stored.engine, rules)
    if m.rule is None or m.failure_class == old:
        return None
    return Change(
        stored.result_id,
        stored.status,
        status_for_class(m.failure_class),
        stored.failure_class,
        m.failure_class,
        stored.message,
        m.line or stored.message,
        excerpt(log_text, m.line_no) if from_log else stored.log_excerpt,
        m.rule,
    )


def read_log(path: str | None, limit: int = FULL_LOG_BYTES) -> str | None:
    """The probe's log file while it still exists (its last `limit` bytes), else None."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - limit))
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def log_of(session: Session, stored: queries.StoredFailure) -> str:
    """The most of a result's log still known: its file, else the kept end and the excerpt.
    The file is read only where ingest kept its end: a path from a record sent by another host
    names nothing of ours."""
    kept = queries.stored_log_tail(session, stored.result_id)
    full = read_log(stored.log_path) if kept is not None else None
    if full is not None:
        return full
    # the excerpt first: it is the older part of the log when the matched line preceded the tail
    return "\n".join(part for part in (stored.log_excerpt, kept) if part)


def apply(session: Session, change: Change, version: str) -> None:
    """Write one change: the result (its columns and its record), its cell, the audit row."""
    result = session.get(Result, change.result_id)
    assert result is not None
    result.status, result.failure_class = change.new_status, change.new_class
    result.message, result.log_excerpt = change.new_message, change.new_excerpt
    result.raw = {
        **result.raw,
        "status": change.new_status,
        "failure_class": change.new_class,
        "message": change.new_message,
        "log_excerpt": change.new_excerpt,
    }
    session.execute(
        update(CellLatest)
        .where(CellLatest.result_pk == change.result_id)
        .values(status=change.new_status, failure_class=change.new_class)
    )
    if change.new_status != change.old_status:
        # the stages it blocked in the same probe say by what: keep their words true
        old_why = blocked_message(result.stage, change.old_status)
        new_why = blocked_message(result.stage, change.new_status)
        for blocked in session.scalars(
            select(Result).where(
                Result.model_revision_pk == result.model_revision_pk,
                Result.environment_pk == result.environment_pk,
                Result.run_key == result.run_key,
                Result.status == "skipped",
                Result.message == old_why,
            )
        ):
            blocked.message = new_why
            blocked.raw = {**blocked.raw, "message": new_why}
    session.add(
        Reclassification(
            result_pk=change.result_id,
            at=utc_now(),
            rules_version=version,
            rule=change.rule,
            old_status=change.old_status,
            new_status=change.new_status,
            old_class=change.old_class,
            new_class=change.new_class,
            old_message=change.old_message,
            new_message=change.new_message,
        )
    )


def reclassify(
    session: Session, *, dry_run: bool = False, progress: Callable[[int, int], None] | None = None
) -> tuple[list[tuple[queries.StoredFailure, Change]], int]:
    """Re-apply today's rules to every stored failure; ([(result, change)], how many examined).
    With `dry_run` nothing is written. The caller commits (`store.writing()`)."""
    version = rules_version()
    candidates = queries.stored_failures(session, RECLASSIFIED_STATUSES)
    changes = []
    for done, stored in enumerate(candidates, start=1):
        change = decide(stored, log_of(session, stored)) if revisable(stored) else None
        if change is not None:
            changes.append((stored, change))
            if not dry_run:
                apply(session, change, version)
        if progress is not None:
            progress(done, len(candidates))
    return changes, len(candidates)
