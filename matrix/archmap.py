"""The architecture map: which engine runs which architecture, from the sweep's `arch/<type>`
models. One row per architecture, one column per engine, like llama.cpp's table of ops per
backend. Pure: input is contract records or Observations (see matrix.summary).

A cell's *verdict* is a status that says something about the engine (pass, degraded, fail,
timeout, oom). `error` (ours: a shrink that could not be built, a CPU-path limit) and `skipped`
are not verdicts; the map keeps them, with why, so nothing is dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from matrix.summary import MEANINGFUL, Observation, ResultLike, current, parse_time, worst_status
from probes.stages import STAGES

ARCH_PREFIX = "arch/"


@dataclass(frozen=True)
class MapCell:
    status: str | None
    stage: str | None = None  # the stage that decided a status other than pass
    failure_class: str | None = None
    message: str | None = None
    confirmed: bool | None = None  # the deciding red's bare reproduction (matrix/confirm.py)

    @property
    def verdict(self) -> bool:
        return self.status in MEANINGFUL

    def label(self) -> str:
        if self.status in (None, "pass"):
            return self.status or "-"
        detail = self.failure_class or ""
        bare = " [confirmed bare]" if self.confirmed else ""
        return f"{self.status}: {self.stage}" + (f" ({detail})" if detail else "") + bare


def arch_map(results: Iterable[ResultLike]) -> dict[str, dict[str, MapCell]]:
    """{architecture: {engine: MapCell}} over the current results of `arch/` models."""
    results = list(results)
    confirmed = {(r["model"]["id"], r["engine"]["name"], r["stage"], parse_time(r["started_at"])):
                 r.get("confirmed") for r in results if isinstance(r, dict)}
    stages: dict[tuple[str, str], list[Observation]] = {}
    for (model, engine, _stage), o in current(results).items():
        if model.startswith(ARCH_PREFIX):
            stages.setdefault((model[len(ARCH_PREFIX):], engine), []).append(o)
    out: dict[str, dict[str, MapCell]] = {}
    for (arch, engine), obs in sorted(stages.items()):
        status = worst_status(o.status for o in obs)
        ordered = sorted(obs, key=lambda o: STAGES.index(o.stage) if o.stage in STAGES else 99)
        decider = next((o for o in ordered if o.status == status), None)
        out.setdefault(arch, {})[engine] = MapCell(
            status, None if status == "pass" or decider is None else decider.stage,
            decider.failure_class if decider else None, decider.message if decider else None,
            confirmed.get((decider.model, engine, decider.stage, decider.started_at))
            if decider else None)
    return out


def coverage(amap: dict[str, dict[str, MapCell]], engines: Sequence[str]) -> dict[str, Any]:
    """How much of the map has a verdict: in every engine, per engine, and what lacks one."""
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
            "per_engine": per_engine, "without_verdict": lacking}


def _md(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe would end the Markdown cell


def map_markdown(amap: dict[str, dict[str, MapCell]], engines: Sequence[str]) -> str:
    """The map as a Markdown table (cells: pass, or status: stage (class))."""
    lines = ["| architecture | " + " | ".join(engines) + " |",
             "|---|" + "---|" * len(engines)]
    for arch, row in amap.items():
        cells = [_md(row.get(e, MapCell(None)).label()) for e in engines]
        lines.append(f"| {_md(arch)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
