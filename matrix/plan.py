"""Planning: model revisions x engine environments x stages, minus what already has a result.

Pure: no I/O, no clock. The store's history comes in as rows (model id, revision, environment
id, stage[, status]); the plan comes out as one task per (model revision, environment) with the
stages it still lacks, since one probe child runs all stages of a cell (an engine start, minutes
on vLLM, serves them all). A night with nothing new plans nothing.

A stage counts as done once it has any result except `error` (our side: retried, up to
`max_error_attempts` nights, then left for a person).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

RETRIED_STATUS = "error"


class ModelLike(Protocol):
    # Read-only, so frozen dataclasses (a sweep copy, a discovered model) are models too.
    @property
    def id(self) -> str: ...

    @property
    def revision(self) -> str | None: ...


@dataclass(frozen=True)
class EnvironmentTarget:
    """One engine environment the night probes in, with the stages that engine runs."""

    environment_id: str
    engine: str
    version: str
    stages: tuple[str, ...]
    heavy: bool = False  # a heavy engine (vLLM, SGLang) runs alone on a small machine
    resolution: str = "today"  # which lock of the release (matrix/locks.py)


@dataclass(frozen=True)
class ProbeTask:
    model_id: str
    revision: str
    environment_id: str
    engine: str
    version: str
    stages: tuple[str, ...]
    model_dir: str | None = None
    skip_reason: str | None = None  # recorded as `skipped` without running anything
    heavy: bool = False
    resolution: str = "today"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.model_id, self.revision, self.environment_id)


@dataclass
class DoneIndex:
    """(model id, revision, environment id) -> stages with a final result, and error counts."""

    done: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    errors: dict[tuple[str, str, str, str], int] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> DoneIndex:
        index = cls()
        for row in rows:
            model_id, revision, env_id, stage = row[0], row[1] or "", row[2], row[3]
            status = row[4] if len(row) > 4 else None
            index.add(model_id, revision, env_id, stage, status)
        return index

    def add(self, model_id: str, revision: str, env_id: str, stage: str, status: str | None = None) -> None:
        if status == RETRIED_STATUS:
            key4 = (model_id, revision, env_id, stage)
            self.errors[key4] = self.errors.get(key4, 0) + 1
            return
        self.done.setdefault((model_id, revision, env_id), set()).add(stage)

    def missing(
        self, model_id: str, revision: str, env: EnvironmentTarget, max_error_attempts: int
    ) -> tuple[str, ...]:
        done = self.done.get((model_id, revision, env.environment_id), ())
        return tuple(
            s
            for s in env.stages
            if s not in done
            and self.errors.get((model_id, revision, env.environment_id, s), 0) < max_error_attempts
        )


def plan(
    models: Iterable[ModelLike],
    environments: Sequence[EnvironmentTarget],
    done: DoneIndex,
    *,
    max_error_attempts: int = 2,
) -> list[ProbeTask]:
    """Every (model revision, environment) with stages still to run, models in the order
    given (newest first from discovery), environments in the order given."""
    tasks: list[ProbeTask] = []
    seen: set[tuple[str, str]] = set()
    for model in models:
        revision = model.revision or ""
        if (model.id, revision) in seen:
            continue
        seen.add((model.id, revision))
        model_dir = getattr(model, "model_dir", None)
        skip_reason = getattr(model, "skip_reason", None)
        for env in environments:
            stages = done.missing(model.id, revision, env, max_error_attempts)
            if stages:
                tasks.append(
                    ProbeTask(
                        model_id=model.id,
                        revision=revision,
                        environment_id=env.environment_id,
                        engine=env.engine,
                        version=env.version,
                        stages=stages,
                        model_dir=model_dir,
                        skip_reason=skip_reason,
                        heavy=env.heavy,
                        resolution=env.resolution,
                    )
                )
    return tasks


def summarize(tasks: Sequence[ProbeTask]) -> dict[str, int]:
    """Counts for the progress line and the run's notes."""
    return {
        "tasks": len(tasks),
        "stages": sum(len(t.stages) for t in tasks),
        "models": len({(t.model_id, t.revision) for t in tasks}),
        "environments": len({t.environment_id for t in tasks}),
        "skipped": sum(1 for t in tasks if t.skip_reason),
    }
