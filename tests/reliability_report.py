"""Figures for docs/reliability.md, from the reliability suite's own output.

The tests (test_reliability.py, test_hostile_models.py, test_service_security.py) call `note()`
for each fault or attack they try: one JSON file per case under artifacts/reliability/. Then

    python -m tests.reliability_report          # writes docs/reliability.md

renders every row from those files (and bench/results/load.json, when the load bench ran).
Nothing in the tables is typed by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("DAYONE_RELIABILITY_DIR", ROOT / "artifacts" / "reliability"))
DOC = ROOT / "docs" / "reliability.md"
LOAD = ROOT / "bench" / "results" / "load.json"

AREAS = {
    "faults": "Faults in probes, servers, the store and the nightly",
    "hostile": "Hostile model directories",
    "service": "The service under attack",
}


def note(
    area: str,
    case: str,
    *,
    tried: int,
    outcomes: Iterable[str] | Counter,
    expected: str,
    held: bool,
    detail: str = "",
) -> None:
    """Record one fault or attack: how many times it was tried, what came out, whether dayone
    held (the test asserts the same thing right after)."""
    counts = Counter(outcomes)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", f"{area}-{case}".lower()).strip("-")[:100]
    (ARTIFACTS / f"{slug}.json").write_text(
        json.dumps(
            {
                "area": area,
                "case": case,
                "tried": tried,
                "outcomes": {k: v for k, v in sorted(counts.items()) if v},
                "expected": expected,
                "held": bool(held),
                "detail": detail,
                "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            },
            indent=1,
        )
    )


def load_rows(folder: Path = ARTIFACTS) -> list[dict]:
    rows = []
    for path in sorted(folder.glob("*.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return rows


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(rows: list[dict], load: dict | None) -> str:
    out = [
        "# Reliability and security: what was tried, and what happened",
        "",
        "Every figure below comes from the last run of the reliability suite "
        "(`pytest tests/test_reliability.py tests/test_hostile_models.py "
        "tests/test_service_security.py`, which writes `artifacts/reliability/*.json`) and of "
        "`python bench/bench_load.py` (`bench/results/load.json`), rendered by "
        "`python -m tests.reliability_report`. Regenerate it; do not edit it by hand.",
        "",
    ]
    total = sum(r["tried"] for r in rows)
    held = sum(1 for r in rows if r["held"])
    out += [f"**{len(rows)} cases, {total} attempts; dayone held in {held} of {len(rows)} cases.**", ""]
    for area, title in AREAS.items():
        mine = [r for r in rows if r["area"] == area]
        if not mine:
            continue
        out += [
            f"## {title}",
            "",
            "| fault / attack | tried | what came out | expected | held | notes |",
            "|---|---:|---|---|---|---|",
        ]
        for r in sorted(mine, key=lambda r: r["case"]):
            got = ", ".join(f"{k} x{v}" for k, v in r["outcomes"].items())
            out.append(
                f"| {_cell(r['case'])} | {r['tried']} | {_cell(got)} | "
                f"{_cell(r['expected'])} | {'yes' if r['held'] else '**NO**'} | "
                f"{_cell(r['detail'])} |"
            )
        out.append("")
    if load:
        out += [
            "## Load (loopback, fixed request count)",
            "",
            "| store | requests | concurrency | requests/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for run in load.get("runs", []):
            out.append(
                f"| {load['store']['results']} results, {load['store']['models']} models"
                f" | {run['requests']} | {run['concurrency']} | {run['rps']:.0f} | "
                f"{run['p50_ms']:.1f} | {run['p99_ms']:.1f} | {run['errors']} |"
            )
        out += ["", f"Endpoints: {', '.join(load.get('paths', []))}. Host: {load.get('host', '?')}.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    rows = load_rows()
    if not rows:
        print(f"no rows under {ARTIFACTS}: run the reliability tests first", file=sys.stderr)
        return 1
    load = json.loads(LOAD.read_text()) if LOAD.exists() else None
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render(rows, load))
    print(f"wrote {DOC} ({len(rows)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
