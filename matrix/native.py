"""When an architecture was last native in an engine: what a transformers-fallback cell says.

A vLLM or SGLang cell that loads on the engine's transformers fallback is `degraded`; the map
adds when that architecture last ran on the engine's own implementation, from facts only:

- measured: records of the same model in other releases of the same engine whose load passed
  without the fallback (metrics `transformers_fallback` false), or ran on it;
- recorded: the engine's own registry per release (matrix/registries/<engine>.json, made by
  matrix/engine_registry.py): whether that release lists the architecture class natively, and
  the classes its newest registry says were supported up to a release and then removed.

Where both speak of one release, the measurement wins (it is what happened to this copy).
Releases neither knows are unknown, never counted. Pure: records in, a NativeHistory out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from matrix.engine_registry import Registry
from matrix.summary import version_key

FALLBACK = "transformers_fallback"


@dataclass(frozen=True)
class NativeHistory:
    engine: str
    architecture: str | None  # the architecture class the copy declares
    current: str  # the release the fallback cell is from
    last_native: str | None  # the newest release before `current` where it was native
    source: str | None  # how that is known: measured, registry, or registry (removed after)
    known: tuple[str, ...] = ()  # the releases whose nativeness is known, oldest first
    measured: tuple[str, ...] = ()  # of those, the ones we probed

    def text(self) -> str:
        if self.last_native:
            return f"native up to {self.engine} {self.last_native} ({self.source})"
        if self.known:
            span = self.known[0] if len(self.known) == 1 else f"{self.known[0]}–{self.known[-1]}"
            return f"never native in the releases probed ({span})"
        return f"native history unknown for {self.engine}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text(),
            "architecture": self.architecture,
            "current": self.current,
            "last_native": self.last_native,
            "source": self.source,
            "known": list(self.known),
            "measured": list(self.measured),
        }


def is_fallback(record: Mapping[str, Any]) -> bool:
    metrics = record.get("metrics") or {}
    return record.get("failure_class") == FALLBACK or metrics.get(FALLBACK) is True


def _native_load(record: Mapping[str, Any]) -> bool:
    """A load that passed on the engine's own implementation (the probe said so)."""
    metrics = record.get("metrics") or {}
    return record.get("status") == "pass" and metrics.get(FALLBACK) is False


def architecture_of(record: Mapping[str, Any]) -> str | None:
    """The architecture class a record's copy declares (the load's metrics, else the model's)."""
    metrics = record.get("metrics") or {}
    return metrics.get("architecture") or (record.get("model") or {}).get("architecture")


def native_history(
    records: Iterable[Mapping[str, Any]],
    *,
    model: str,
    engine: str,
    current: str,
    architecture: str | None,
    registry: Registry | None = None,
) -> NativeHistory:
    """When `model`'s architecture was last native in `engine`, as of release `current`.

    `records`: any records (others are ignored); the load records of `model` in `engine` are
    the measurements. `registry`: the engine's recorded registries, or None (unknown)."""
    state: dict[str, bool] = {}  # release -> native?
    measured: set[str] = set()
    for r in records:
        if (
            (r.get("model") or {}).get("id") != model
            or (r.get("engine") or {}).get("name") != engine
            or r.get("stage") != "load"
        ):
            continue
        version = str((r.get("engine") or {}).get("version") or "")
        if not version:
            continue
        if _native_load(r):
            state[version] = True  # native once in a release is native in that release
        elif is_fallback(r):
            state.setdefault(version, False)
        else:
            continue
        measured.add(version)
        architecture = architecture or architecture_of(r)
    recorded_removed = None
    if registry is not None and registry.engine == engine and architecture:
        for version in registry.releases:
            if version not in measured:
                native = registry.native(version, architecture)
                if native is not None:
                    state[version] = native
        recorded_removed = registry.previously_supported(architecture)
    current_key = version_key(current)
    before = sorted(
        (v for v, native in state.items() if native and version_key(v) < current_key), key=version_key
    )
    known = tuple(sorted(state, key=version_key))
    if before:
        last = before[-1]
        source = "measured" if last in measured else "registry"
    elif recorded_removed and version_key(recorded_removed) < current_key:
        last, source = recorded_removed, "registry: removed after"
    else:
        last, source = None, None
    return NativeHistory(
        engine, architecture, current, last, source, known, tuple(sorted(measured, key=version_key))
    )
