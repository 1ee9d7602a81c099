"""Confirm reds bare: run a red record's `reproduce` command as written, under the probe's
limits, and record whether the engine alone fails the same way (probes/confirmation.py decides).

The shell only: the command runs in its own process group with the probe's time and memory
watchdog (probes.runner), no dayone on its PYTHONPATH, no network where the probe had none; its
log is kept beside the probe's.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from probes.confirmation import BareOutcome, confirmed_record, decide, is_red
from probes.record import Record
from probes.runner import ProbeRequest, run_probe


@dataclass
class ConfirmSettings:
    timeout_s: float = 600.0
    memory_mb: int = 8192
    no_network: bool = False
    logs_root: Path | None = None  # for records whose probe log directory is gone


@dataclass
class _BareRequest(ProbeRequest):
    """A ProbeRequest whose child is the bare shell line, not the probe child."""

    command: str = ""

    def child_argv(self, events: Path, workdir: Path) -> list[str]:
        return ["bash", "-c", self.command]


def needs_confirmation(record: Mapping[str, Any]) -> bool:
    """A red with a bare command that nobody checked yet."""
    return (
        is_red(record.get("status", ""))
        and bool(record.get("reproduce"))
        and record.get("confirmed") is None
        and not str(record["reproduce"]).startswith("docker ")
    )


def _confirm_dir(record: Mapping[str, Any], settings: ConfirmSettings) -> Path:
    stage = re.sub(r"[^A-Za-z0-9_.-]+", "_", record["stage"])
    if record.get("log_path"):
        return Path(record["log_path"]).parent / f"confirm-{stage}"
    from matrix.paths import dayone_home

    root = settings.logs_root or dayone_home() / "logs"
    model = re.sub(r"[^A-Za-z0-9_.-]+", "_", record["model"]["id"])[:80]
    return root / "confirm" / model / f"{record['engine']['name']}-{stage}"


def _read(path: str | None) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def run_bare(command: str, log_dir: Path, settings: ConfirmSettings) -> BareOutcome:
    """The command under the probe's watchdog; its log is `<log_dir>/bare.log`."""
    empty = log_dir / "no-dayone"  # PYTHONPATH of the run: an empty folder, never probes/
    empty.mkdir(parents=True, exist_ok=True)
    req = _BareRequest(
        engine="bare",
        model_dir=log_dir,
        stages=[],
        probes_root=empty,
        timeout_s=settings.timeout_s,
        memory_mb=settings.memory_mb,
        no_network=settings.no_network,
        command=command,
    )
    outcome = run_probe(req, log_dir)
    log_path = log_dir / "bare.log"
    try:
        os.replace(outcome.log_path, log_path)
    except OSError:
        log_path = outcome.log_path
    (log_dir / "events.jsonl").unlink(missing_ok=True)
    text = outcome.log_text
    if outcome.infra_error:
        text += f"\ndayone: {outcome.infra_error}\n"
    return BareOutcome(
        outcome.returncode,
        outcome.timed_out,
        outcome.memory_exceeded,
        text,
        str(log_path),
        outcome.duration_s,
    )


def confirm_record(record: Record, settings: ConfirmSettings | None = None) -> Record:
    """The record with its confirmation (unchanged when it needs none)."""
    command = record.get("reproduce")
    if not command or not needs_confirmation(record):
        return record
    settings = settings or ConfirmSettings()
    log_dir = _confirm_dir(record, settings)
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    bare = run_bare(command, log_dir, settings)
    probe_log = _read(record.get("log_path")) or "\n".join(
        x for x in (record.get("log_excerpt"), record.get("message")) if x
    )
    decision = decide(record, probe_log, bare)
    return confirmed_record(
        record,
        decision,
        log_path=bare.log_path,
        command=command,
        at=dt.datetime.now(dt.timezone.utc).isoformat(),
        duration_s=time.monotonic() - t0,
    )


def confirm_records(
    records: Sequence[Record],
    settings: ConfirmSettings | None = None,
    say: Callable[[str], None] = print,
    done: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Every record, each red confirmed once (in order; DONE is called after each red)."""
    out = []
    for record in records:
        if needs_confirmation(record):
            say(
                f"confirming {record['model']['id']} x {record['engine']['name']} "
                f"{record['stage']} ({record['status']}) bare"
            )
            record = confirm_record(record, settings)
            c = record.get("confirmation") or {}
            say(f"  -> {c.get('verdict')}: {c.get('message', '')[:200]}")
            if done:
                done(record)
        out.append(record)
    return out
