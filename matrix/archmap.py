"""The architecture map: which engine runs which architecture, from the sweep's `arch/<type>`
models. One row per architecture, one column per engine, like llama.cpp's table of ops per
backend. Pure: input is contract records or Observations (see matrix.summary).

A cell's *verdict* is a status that says something about the engine (pass, degraded, fail,
timeout, oom). `error` (ours), `needs-gpu` and `n/a` (no verdict: no path on this hardware, does
not apply) and `skipped` are not verdicts; the map keeps them, with why, so nothing is dropped.
A cell shows every stage it has, so a stage without a verdict never hides under a green one.
Types that are not decoder-only generators (probes/not_generative.json) are listed apart, out
of the coverage figure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from matrix.engine_registry import Registry, load_registry
from matrix.native import NativeHistory, architecture_of, is_fallback, native_history
from matrix.summary import (FALLBACK, MEANINGFUL, Observation, ResultLike, current,
                            parse_time)
from probes.modelinfo import not_generative
from probes.stages import STAGES

ARCH_PREFIX = "arch/"
FALLBACK_CLASS = "transformers_fallback"  # the engine ran it on its transformers backend

# A cell's status, worst first: a red or amber verdict, then a stage without one (ours first),
# and green only when every stage is green. (Not summary.worst_status: there a pass outranks an
# error; in the map a green load over an `error` generate is not green.)
CELL_ORDER: tuple[str, ...] = tuple(s for s in MEANINGFUL if s != "pass") + FALLBACK + ("pass",)


@dataclass(frozen=True)
class StageCell:
    stage: str
    status: str
    failure_class: str | None = None
    message: str | None = None

    def label(self) -> str:
        return f"{self.stage} {self.status}" + (f" ({self.failure_class})"
                                                if self.failure_class else "")


@dataclass(frozen=True)
class MapCell:
    status: str | None
    stage: str | None = None  # the stage that decided a status other than pass
    failure_class: str | None = None
    message: str | None = None
    stages: tuple[StageCell, ...] = field(default=())  # every stage, in probe order
    confirmed: bool | None = None  # the deciding red's bare reproduction (matrix/confirm.py)
    # A transformers-fallback cell: when the architecture was last native (matrix/native.py).
    native: NativeHistory | None = None

    @property
    def verdict(self) -> bool:
        return self.status in MEANINGFUL

    def label(self) -> str:
        """`pass`, or `status: stage (class)` then every other stage that is not green."""
        if self.status in (None, "pass"):
            return self.status or "-"
        bare = " [confirmed bare]" if self.confirmed else ""
        head = f"{self.status}: {self.stage}" + (f" ({self.failure_class})"
                                                 if self.failure_class else "") + bare
        if self.native is not None:
            head += f"; {self.native.text()}"
        rest = [s.label() for s in self.stages if s.stage != self.stage and s.status != "pass"]
        return ", ".join([head, *rest])

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "stage": self.stage, "failure_class": self.failure_class,
                "message": self.message, "stages": {s.stage: {
                    "status": s.status, "failure_class": s.failure_class,
                    "message": s.message} for s in self.stages},
                "confirmed": self.confirmed,
                "native": self.native.as_dict() if self.native else None}


def cell_of(obs: Iterable[Observation]) -> MapCell:
    """One (architecture, engine) from its stages' current results."""
    ordered = sorted(obs, key=lambda o: STAGES.index(o.stage) if o.stage in STAGES else 99)
    stages = tuple(StageCell(o.stage, o.status, o.failure_class, o.message) for o in ordered)
    present = {s.status for s in stages}
    status = next((s for s in CELL_ORDER if s in present), None)
    decider = next((s for s in stages if s.status == status), None)
    if status is None or decider is None:
        return MapCell(None, stages=stages)
    if status == "pass":
        return MapCell("pass", stages=stages)
    return MapCell(status, decider.stage, decider.failure_class, decider.message, stages)


def arch_map(results: Iterable[ResultLike], registries: dict[str, Registry | None] | None = None
             ) -> dict[str, dict[str, MapCell]]:
    """{architecture: {engine: MapCell}} over the current results of `arch/` models. A cell on
    the transformers fallback says when its architecture was last native, from the records of
    other releases and `registries` ({engine: its recorded registries}; None: the packaged
    matrix/registries/ files)."""
    results = list(results)
    records = [r for r in results if isinstance(r, dict)]
    confirmed = {(r["model"]["id"], r["engine"]["name"], r["stage"], parse_time(r["started_at"])):
                 r.get("confirmed") for r in results if isinstance(r, dict)}
    stages: dict[tuple[str, str], list[Observation]] = {}
    for (model, engine, _stage), o in current(results).items():
        if model.startswith(ARCH_PREFIX):
            stages.setdefault((model[len(ARCH_PREFIX):], engine), []).append(o)
    out: dict[str, dict[str, MapCell]] = {}
    known: dict[str, Registry | None] = {}
    for (arch, engine), obs in sorted(stages.items()):
        cell = cell_of(obs)
        decider = next((o for o in obs if o.stage == cell.stage), None)
        if decider is not None:  # the deciding red's bare reproduction, where it ran
            cell = replace(cell, confirmed=confirmed.get(
                (decider.model, engine, decider.stage, decider.started_at)))
        if cell.failure_class == FALLBACK_CLASS and decider is not None:
            if engine not in known:
                known[engine] = (load_registry(engine) if registries is None
                                 else registries.get(engine))
            cell = replace(cell, native=fallback_history(records, decider, known[engine]))
        out.setdefault(arch, {})[engine] = cell
    return out


def fallback_history(records: Sequence[dict[str, Any]], decider: Observation,
                     registry: Registry | None) -> NativeHistory:
    """When the architecture of a fallback cell was last native, as of the cell's release."""
    load = next((r for r in records if r["model"]["id"] == decider.model
                 and r["engine"]["name"] == decider.engine and r["stage"] == "load"
                 and str(r["engine"].get("version")) == decider.engine_version
                 and is_fallback(r)), None)
    architecture = architecture_of(load) if load is not None else None
    return native_history(records, model=decider.model, engine=decider.engine,
                          current=decider.engine_version, architecture=architecture,
                          registry=registry)


def why_not_generative(arch: str, row: dict[str, MapCell]) -> str | None:
    """Why a map row is not a decoder-only generator, or None. A row is `arch/<model_type>`
    (or `<model_type>+<variant>`): its type decides, or every stage of it said `n/a`."""
    why = not_generative(None, arch.split("+", 1)[0])
    if why:
        return why
    stages = [s for cell in row.values() for s in cell.stages]
    if stages and all(s.status == "n/a" for s in stages):
        return next((s.message for s in stages if s.message), "n/a in every engine")
    return None


def split_generative(amap: dict[str, dict[str, MapCell]]
                     ) -> tuple[dict[str, dict[str, MapCell]], dict[str, str]]:
    """(the generative rows, {architecture: why} of the rows listed apart)."""
    apart = {a: why for a, row in amap.items() for why in [why_not_generative(a, row)] if why}
    return {a: row for a, row in amap.items() if a not in apart}, apart


def coverage(amap: dict[str, dict[str, MapCell]], engines: Sequence[str]) -> dict[str, Any]:
    """How much of the map of generators has a verdict: in every engine, per engine, and what
    lacks one. Types that are not generators are counted apart, never in the figure."""
    amap, apart = split_generative(amap)
    everywhere = [a for a, row in amap.items()
                  if all(row.get(e, MapCell(None)).verdict for e in engines)]
    per_engine = {e: dict(Counter(amap[a].get(e, MapCell(None)).status or "missing"
                                  for a in amap)) for e in engines}
    lacking = [{"architecture": a, "engine": e, "status": cell.status or "missing",
                "why": cell.message}
               for a, row in amap.items() for e in engines
               for cell in [row.get(e, MapCell(None))] if not cell.verdict]
    total = len(amap)
    return {"architectures": total, "verdict_in_every_engine": len(everywhere),
            "percent": round(100.0 * len(everywhere) / total, 1) if total else 0.0,
            "per_engine": per_engine, "without_verdict": lacking,
            "not_generative": len(apart)}


def _md(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe would end the Markdown cell


def map_markdown(amap: dict[str, dict[str, MapCell]], engines: Sequence[str]) -> str:
    """The map as a Markdown table (cells: pass, or status: stage (class), then the other
    stages that are not green), and the types that are not generators listed apart."""
    rows, apart = split_generative(amap)
    lines = ["| architecture | " + " | ".join(engines) + " |",
             "|---|" + "---|" * len(engines)]
    for arch, row in rows.items():
        cells = [_md(row.get(e, MapCell(None)).label()) for e in engines]
        lines.append(f"| {_md(arch)} | " + " | ".join(cells) + " |")
    if apart:
        lines += ["", "Not decoder-only generators (n/a, out of the coverage figure):", "",
                  "| architecture | why |", "|---|---|"]
        lines += [f"| {_md(a)} | {_md(why)} |" for a, why in apart.items()]
    return "\n".join(lines) + "\n"
