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
from matrix.summary import FALLBACK, MEANINGFUL, Observation, ResultLike, current, parse_time, version_key
from probes.modelinfo import not_generative
from probes.stages import ADAPTER_STAGES, FINETUNE_STAGES, QUANT_STAGES, STAGES

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
        return f"{self.stage} {self.status}" + (f" ({self.failure_class})" if self.failure_class else "")


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
    # The quantized copies' own cell (probes/stages.py:QUANT_STAGES), apart from the engine's
    # verdict on the model as released: None where no quantize stage ran.
    quant: MapCell | None = None
    # The same for a fine-tuned adapter served (ADAPTER_STAGES): None where none was served.
    lora: MapCell | None = None

    @property
    def verdict(self) -> bool:
        return self.status in MEANINGFUL

    def label(self) -> str:
        """`pass`, or `status: stage (class)` then every other stage that is not green."""
        if self.status in (None, "pass"):
            return (self.status or "-") + self.apart_label()
        bare = " [confirmed bare]" if self.confirmed else ""
        head = (
            f"{self.status}: {self.stage}" + (f" ({self.failure_class})" if self.failure_class else "") + bare
        )
        if self.native is not None:
            head += f"; {self.native.text()}"
        rest = [s.label() for s in self.stages if s.stage != self.stage and s.status != "pass"]
        return ", ".join([head, *rest]) + self.apart_label()

    def apart_label(self) -> str:
        """The sub-cells apart from the engine's verdict: `; quant STATUS (class)` where a
        quantize stage ran, `; lora STATUS (class)` where an adapter was served, else ''."""
        out = ""
        for name, sub in (("quant", self.quant), ("lora", self.lora)):
            if sub is not None and sub.status is not None:
                out += f"; {name} {sub.status}" + (f" ({sub.failure_class})" if sub.failure_class else "")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "stage": self.stage,
            "failure_class": self.failure_class,
            "message": self.message,
            "stages": {
                s.stage: {"status": s.status, "failure_class": s.failure_class, "message": s.message}
                for s in self.stages
            },
            "confirmed": self.confirmed,
            "native": self.native.as_dict() if self.native else None,
            "quant": self.quant.as_dict() if self.quant else None,
            "lora": self.lora.as_dict() if self.lora else None,
        }


def cell_of(obs: Iterable[Observation]) -> MapCell:
    """One (architecture, engine) from its stages' current results; the quantize stages decide
    only its `quant` sub-cell and a served adapter only its `lora` one, never the engine's own
    status."""
    obs = list(obs)
    quant = [o for o in obs if o.stage in QUANT_STAGES]
    lora = [o for o in obs if o.stage in ADAPTER_STAGES]
    cell = _cell_of([o for o in obs if o.stage not in QUANT_STAGES + ADAPTER_STAGES])
    return replace(cell, quant=_cell_of(quant) if quant else None, lora=_cell_of(lora) if lora else None)


def _cell_of(obs: Iterable[Observation]) -> MapCell:
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


def arch_map(
    results: Iterable[ResultLike], registries: dict[str, Registry | None] | None = None
) -> dict[str, dict[str, MapCell]]:
    """{architecture: {engine: MapCell}} over the current results of `arch/` models. A cell on
    the transformers fallback says when its architecture was last native, from the records of
    other releases and `registries` ({engine: its recorded registries}; None: the packaged
    matrix/registries/ files)."""
    results = list(results)
    records = [r for r in results if isinstance(r, dict)]
    confirmed = {
        (r["model"]["id"], r["engine"]["name"], r["stage"], parse_time(r["started_at"])): r.get("confirmed")
        for r in results
        if isinstance(r, dict)
    }
    stages: dict[tuple[str, str], list[Observation]] = {}
    for (model, engine, _stage), o in current(results).items():
        if model.startswith(ARCH_PREFIX):
            stages.setdefault((model[len(ARCH_PREFIX) :], engine), []).append(o)
    out: dict[str, dict[str, MapCell]] = {}
    known: dict[str, Registry | None] = {}
    for (arch, engine), obs in sorted(stages.items()):
        cell = cell_of(obs)
        decider = next((o for o in obs if o.stage == cell.stage), None)
        if decider is not None:  # the deciding red's bare reproduction, where it ran
            cell = replace(
                cell, confirmed=confirmed.get((decider.model, engine, decider.stage, decider.started_at))
            )
        if cell.failure_class == FALLBACK_CLASS and decider is not None:
            if engine not in known:
                known[engine] = load_registry(engine) if registries is None else registries.get(engine)
            cell = replace(cell, native=fallback_history(records, decider, known[engine]))
        out.setdefault(arch, {})[engine] = cell
    return out


def fallback_history(
    records: Sequence[dict[str, Any]], decider: Observation, registry: Registry | None
) -> NativeHistory:
    """When the architecture of a fallback cell was last native, as of the cell's release."""
    load = next(
        (
            r
            for r in records
            if r["model"]["id"] == decider.model
            and r["engine"]["name"] == decider.engine
            and r["stage"] == "load"
            and str(r["engine"].get("version")) == decider.engine_version
            and is_fallback(r)
        ),
        None,
    )
    architecture = architecture_of(load) if load is not None else None
    return native_history(
        records,
        model=decider.model,
        engine=decider.engine,
        current=decider.engine_version,
        architecture=architecture,
        registry=registry,
    )


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


def split_generative(
    amap: dict[str, dict[str, MapCell]],
) -> tuple[dict[str, dict[str, MapCell]], dict[str, str]]:
    """(the generative rows, {architecture: why} of the rows listed apart)."""
    apart = {a: why for a, row in amap.items() for why in [why_not_generative(a, row)] if why}
    return {a: row for a, row in amap.items() if a not in apart}, apart


def finetune_engines(engines: Iterable[str]) -> list[str]:
    """The fine-tuning engines among `engines` (every stage they run is a fine-tuning one: PEFT,
    TRL): the map's fine-tune column group, counted apart from the inference engines."""
    from probes.engines import ENGINES

    return [e for e in engines if e in ENGINES and set(ENGINES[e].stages) <= set(FINETUNE_STAGES)]


def inference_engines(engines: Sequence[str]) -> list[str]:
    """The engines of the coverage figure: every one but the fine-tuning engines."""
    tuning = set(finetune_engines(engines))
    return [e for e in engines if e not in tuning]


def coverage(amap: dict[str, dict[str, MapCell]], engines: Sequence[str]) -> dict[str, Any]:
    """How much of the map of generators has a verdict: in every engine, per engine, and what
    lacks one. Types that are not generators are counted apart, never in the figure."""
    amap, apart = split_generative(amap)
    everywhere = [a for a, row in amap.items() if all(row.get(e, MapCell(None)).verdict for e in engines)]
    per_engine = {
        e: dict(Counter(amap[a].get(e, MapCell(None)).status or "missing" for a in amap)) for e in engines
    }
    lacking = [
        {"architecture": a, "engine": e, "status": cell.status or "missing", "why": cell.message}
        for a, row in amap.items()
        for e in engines
        for cell in [row.get(e, MapCell(None))]
        if not cell.verdict
    ]
    total = len(amap)
    return {
        "architectures": total,
        "verdict_in_every_engine": len(everywhere),
        "percent": round(100.0 * len(everywhere) / total, 1) if total else 0.0,
        "per_engine": per_engine,
        "without_verdict": lacking,
        "not_generative": len(apart),
    }


def _md(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe would end the Markdown cell


def map_markdown(amap: dict[str, dict[str, MapCell]], engines: Sequence[str]) -> str:
    """The map as a Markdown table (cells: pass, or status: stage (class), then the other
    stages that are not green), and the types that are not generators listed apart."""
    rows, apart = split_generative(amap)
    lines = ["| architecture | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for arch, row in rows.items():
        cells = [_md(row.get(e, MapCell(None)).label()) for e in engines]
        lines.append(f"| {_md(arch)} | " + " | ".join(cells) + " |")
    if apart:
        lines += [
            "",
            "Not decoder-only generators (n/a, out of the coverage figure):",
            "",
            "| architecture | why |",
            "|---|---|",
        ]
        lines += [f"| {_md(a)} | {_md(why)} |" for a, why in apart.items()]
    return "\n".join(lines) + "\n"


# The map as one document (the CLI's --json, the site's /map and /map.json)


def lineages(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{architecture: where its copy came from (a release, or synthetic)}, as its newest
    record says (a rule change can move a type from a release to synthetic, or back)."""
    newest: dict[str, tuple[str, dict[str, Any]]] = {}
    for r in records:
        arch, lineage = r["model"]["id"], r["model"].get("lineage")
        if not arch.startswith(ARCH_PREFIX) or not lineage:
            continue
        at = str(r.get("started_at") or "")
        key = arch[len(ARCH_PREFIX) :]
        if key not in newest or at >= newest[key][0]:
            newest[key] = (at, lineage)
    return {arch: lineage for arch, (_at, lineage) in newest.items()}


def map_document(
    records: Sequence[ResultLike],
    engines: Sequence[str] | None = None,
    registries: dict[str, Registry | None] | None = None,
) -> dict[str, Any]:
    """The map, its coverage over the inference engines of `engines` (None: every engine with
    results), the fine-tune group's apart, and where each copy came from, as JSON-able data:
    `dayone map --json` prints it and the site serves it, so the two never drift."""
    amap = arch_map(records, registries)
    engines = list(engines or sorted({e for row in amap.values() for e in row}))
    rows, apart = split_generative(amap)
    tuning = finetune_engines(engines)
    engines = inference_engines(engines) + tuning  # the fine-tune group's columns last
    return {
        "engines": engines,
        "groups": {"inference": inference_engines(engines), "finetune": tuning},
        "coverage": coverage(amap, inference_engines(engines)),
        "finetune_coverage": coverage(amap, tuning) if tuning else None,
        "lineage": lineages(r for r in records if isinstance(r, dict)),
        "cells": {a: {e: c.as_dict() for e, c in row.items()} for a, row in rows.items()},
        "not_generative": {
            a: {"why": why, "cells": {e: c.as_dict() for e, c in amap[a].items()}} for a, why in apart.items()
        },
    }


LINEAGE_KINDS = ("release", "synthetic")


def lineage_kind(lineage: dict[str, Any] | None) -> str | None:
    """`release` (shrunk from a published release's files) or `synthetic`, or None: unknown."""
    source = (lineage or {}).get("source")
    return source if source in LINEAGE_KINDS else None


@dataclass(frozen=True)
class MapFilters:
    """What a reader narrows the map to. `q`: a substring of the architecture or of the
    release its copy came from (a family is spelled in both: `qwen3`, `Qwen/Qwen3-4B`)."""

    q: str | None = None
    engine: str | None = None
    status: str | None = None
    lineage: str | None = None  # one of LINEAGE_KINDS
    # Which results make the map at all (not a filter of its rows): the cells are computed
    # over the results on that hardware / of that tier alone (the reader's queries do it).
    hardware: str | None = None
    tier: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "q": self.q,
            "engine": self.engine,
            "status": self.status,
            "lineage": self.lineage,
            "hardware": self.hardware,
            "tier": self.tier,
        }


def _row_matches(
    arch: str,
    cells: dict[str, dict[str, Any]],
    lineage: dict[str, Any] | None,
    engines: Sequence[str],
    f: MapFilters,
) -> bool:
    if f.q:
        needle = f.q.casefold()
        repo = str((lineage or {}).get("repo") or "")
        if needle not in arch.casefold() and needle not in repo.casefold():
            return False
    if f.lineage and lineage_kind(lineage) != f.lineage:
        return False
    # A status matches a cell shown, so `fail` with engine `vllm` means red in vLLM.
    return not f.status or any((cells.get(e) or {}).get("status") == f.status for e in engines)


def filter_document(doc: dict[str, Any], f: MapFilters) -> dict[str, Any]:
    """The document with only the rows and engine columns the filters keep. The coverage
    figure stays the whole map's over every engine: a filter narrows what is read, not what is
    counted."""
    engines = [f.engine] if f.engine else doc["engines"]
    lineage = doc["lineage"]

    def shown(cells: dict[str, Any]) -> dict[str, Any]:
        return {e: c for e, c in cells.items() if e in engines}

    return {
        **doc,
        "engines": engines,
        "filters": f.as_dict(),
        "cells": {
            a: shown(row)
            for a, row in doc["cells"].items()
            if _row_matches(a, row, lineage.get(a), engines, f)
        },
        "not_generative": {
            a: {**apart, "cells": shown(apart["cells"])}
            for a, apart in doc["not_generative"].items()
            if _row_matches(a, apart["cells"], lineage.get(a), engines, f)
        },
    }


# The release timeline (caniuse's versions) and the share green per release


@dataclass(frozen=True)
class ReleaseStatus:
    version: str
    status: str | None


def release_timeline(obs: Iterable[Observation]) -> dict[str, dict[str, list[ReleaseStatus]]]:
    """{architecture: {engine: its releases with results, oldest first, each with the status
    the map would give a cell of that release alone}}: the same rule as a current cell (every
    stage counts, an `error` under a green load is not green), from each stage's latest result
    within that release."""
    latest: dict[tuple[str, str, str, str], Observation] = {}
    for o in obs:
        if not o.model.startswith(ARCH_PREFIX):
            continue
        key = (o.model[len(ARCH_PREFIX) :], o.engine, o.engine_version, o.stage)
        if key not in latest or o.started_at > latest[key].started_at:
            latest[key] = o
    by_release: dict[tuple[str, str, str], list[Observation]] = {}
    for (arch, engine, version, _stage), o in latest.items():
        by_release.setdefault((arch, engine, version), []).append(o)
    out: dict[str, dict[str, list[ReleaseStatus]]] = {}
    for (arch, engine, version), stages in sorted(
        by_release.items(), key=lambda kv: (kv[0][0], kv[0][1], version_key(kv[0][2]))
    ):
        out.setdefault(arch, {}).setdefault(engine, []).append(ReleaseStatus(version, cell_of(stages).status))
    return out


@dataclass(frozen=True)
class GreenShare:
    version: str
    green: int
    total: int  # generative architectures with a result in this release

    @property
    def percent(self) -> float:
        return round(100.0 * self.green / self.total, 1) if self.total else 0.0


def green_share(
    timeline: dict[str, dict[str, list[ReleaseStatus]]], apart: Iterable[str]
) -> dict[str, list[GreenShare]]:
    """{engine: per release, oldest first, how many of the generative architectures probed in
    it are green}. Types that are not generators stay out, as in the coverage figure."""
    skip = set(apart)
    counts: dict[tuple[str, str], list[int]] = {}
    for arch, engines in timeline.items():
        if arch in skip:
            continue
        for engine, releases in engines.items():
            for r in releases:
                c = counts.setdefault((engine, r.version), [0, 0])
                c[0] += r.status == "pass"
                c[1] += 1
    out: dict[str, list[GreenShare]] = {}
    for (engine, version), (green, total) in sorted(
        counts.items(), key=lambda kv: (kv[0][0], version_key(kv[0][1]))
    ):
        out.setdefault(engine, []).append(GreenShare(version, green, total))
    return out


# Since when (caniuse's "supported since", MDN's version_added / version_removed)

WORKS, PARTIAL, BROKE = "supported", "partial", "broken"
_KIND = {"pass": WORKS, "degraded": PARTIAL, "fail": BROKE, "timeout": BROKE, "oom": BROKE}


@dataclass(frozen=True)
class ReleaseSpan:
    """What one engine's releases say of one architecture, oldest to newest. Releases without
    a verdict (error: ours, skipped, n/a, needs-gpu) say nothing and are passed over.

    `now`: the newest verdict's kind (supported: pass, partial: degraded, broken: red), or
    None when no release has a verdict; `since`: the first release of the trailing run of
    that kind; `first_green` / `last_green`: the oldest and newest green release."""

    engine: str
    now: str | None
    since: str | None
    first_green: str | None
    last_green: str | None
    first: str | None  # the oldest and newest release with a verdict
    newest: str | None
    worked_before: bool  # a release before the trailing red run passed or was degraded

    @property
    def supported_since(self) -> str | None:
        return self.since if self.now == WORKS else None

    @property
    def broken_since(self) -> str | None:
        """The first red release after a working one (a regression that still stands)."""
        return self.since if self.now == BROKE and self.worked_before else None

    def text(self) -> str:
        if self.now == WORKS:
            return f"supported since {self.engine} {self.since}"
        if self.now == PARTIAL:
            return f"partial (degraded) since {self.engine} {self.since}"
        if self.now == BROKE and self.worked_before:
            last = f"; last green {self.last_green}" if self.last_green else ""
            return f"broken since {self.engine} {self.since}{last}"
        if self.now == BROKE:
            span = self.first if self.first == self.newest else f"{self.first}–{self.newest}"
            return f"never worked in the releases probed ({span})"
        return "no verdict in any release probed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "since": self.since,
            "supported_since": self.supported_since,
            "broken_since": self.broken_since,
            "first_green": self.first_green,
            "last_green": self.last_green,
            "text": self.text(),
        }


def release_span(engine: str, releases: Sequence[ReleaseStatus]) -> ReleaseSpan:
    """The span of one engine's releases (oldest first, as `release_timeline` gives them)."""
    judged = [(r.version, _KIND[r.status]) for r in releases if r.status in _KIND]
    greens = [v for v, k in judged if k == WORKS]
    if not judged:
        return ReleaseSpan(engine, None, None, None, None, None, None, False)
    now = judged[-1][1]
    start = len(judged) - 1
    while start > 0 and judged[start - 1][1] == now:
        start -= 1
    worked = any(k in (WORKS, PARTIAL) for _v, k in judged[:start])
    return ReleaseSpan(
        engine,
        now,
        judged[start][0],
        greens[0] if greens else None,
        greens[-1] if greens else None,
        judged[0][0],
        judged[-1][0],
        worked,
    )
