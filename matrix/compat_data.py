"""Support data in the shape of MDN's browser-compat-data (pure, but for `write_package`).

Per (architecture or model, engine), support statements over the engine releases probed:
`version_added` (the first release of a run of working releases), `version_removed` (the first
release after it that is not working the same way: broken, or only partially working),
`partial_implementation` (the run was `degraded`: it works, worse than it should) with `notes`
saying why. Several runs are an array of statements, newest first, as MDN writes them. A cell
that never worked in a release probed is `{"version_added": false}` with a note naming the
releases and why; one with no verdict at all (only `error` / `skipped` / `n/a` / `needs-gpu`)
is `{"version_added": null}` (MDN's "unknown"), its note naming the kinds.

The document, `compat_document`:
  __meta         version (semver: SCHEMA.YYYYMMDD.seconds-of-day, from the time given),
                 schema_version, timestamp, generator
  engines        MDN's `browsers`: per engine, its releases probed, each with the first result
                 and a status (current: the newest final release; retired; beta: a pre-release)
  architectures  per sweep architecture (`arch/TYPE` -> TYPE): {"__compat": {"support": ...}}
  models         per tracked model id, the same
The JSON Schema is compat_data.schema.json beside this file (tests validate against it);
`dayone export --data DIR` writes the package (data.json, the schema, package.json) and the
API serves both (`/api/v1/compat`, `/api/v1/compat/schema`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from matrix import summary as S
from matrix.release_diff import ARCH_PREFIX, Verdict, release_verdicts

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("compat_data.schema.json")
PACKAGE_NAME = "dayone-compat-data"
NOTE_CHARS = 300


def _state(v: Verdict) -> str:
    return "full" if v.status == S.GREEN else "partial" if v.status in S.WORKING else "none"


def _short(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= NOTE_CHARS else text[: NOTE_CHARS - 1] + "…"


def support_statement(history: Sequence[tuple[str, Verdict]]) -> dict[str, Any] | list[Any]:
    """One (model, engine)'s MDN support statement from its verdict per release (any order):
    one object, or an array of them newest first."""
    ordered = sorted(history, key=lambda vv: S.version_key(vv[0]))
    meaningful = [(ver, v) for ver, v in ordered if v.status in S.MEANINGFUL]
    if not meaningful:
        kinds = sorted({v.status for _ver, v in ordered})
        return {"version_added": None, "notes": f"No verdict ({', '.join(kinds) or 'no result'})."}
    runs: list[tuple[str, list[tuple[str, Verdict]]]] = []  # (state, releases), oldest first
    for ver, v in meaningful:
        state = _state(v)
        if runs and runs[-1][0] == state:
            runs[-1][1].append((ver, v))
        else:
            runs.append((state, [(ver, v)]))
    statements: list[dict[str, Any]] = []
    for i, (state, members) in enumerate(runs):
        if state == "none":
            continue
        st: dict[str, Any] = {"version_added": members[0][0]}
        notes: list[str] = []
        if i + 1 < len(runs):
            nxt_state, nxt = runs[i + 1]
            st["version_removed"] = nxt[0][0]
            if nxt_state == "none":
                notes.append(f"Broken since {nxt[0][0]}: {nxt[0][1].why}.")
        if state == "partial":
            st["partial_implementation"] = True
            v = members[-1][1]
            why = _short(v.message)
            notes.insert(0, f"Degraded ({v.stage}" + (f": {why}" if why else "") + ").")
        if notes:
            st["notes"] = notes[0] if len(notes) == 1 else notes
        statements.append(st)
    if not statements:
        first, last = meaningful[0][0], meaningful[-1][0]
        span = first if first == last else f"{first} to {last}"
        return {
            "version_added": False,
            "notes": f"Not working in any release probed ({span}): {meaningful[-1][1].why}.",
        }
    statements.reverse()  # newest first, as MDN orders them
    return statements[0] if len(statements) == 1 else statements


def _release_status(version: str, newest_final: str | None) -> str:
    try:
        parsed = Version(version)
    except InvalidVersion:
        return "retired"
    if parsed.is_devrelease:
        return "nightly"
    if parsed.is_prerelease:
        return "beta"
    return "current" if version == newest_final else "retired"


def package_version(now: dt.datetime) -> str:
    """semver of the data: SCHEMA.YYYYMMDD.seconds-of-day (UTC), so a later export sorts after."""
    t = S.parse_time(now)
    return f"{SCHEMA_VERSION}.{t:%Y%m%d}.{t.hour * 3600 + t.minute * 60 + t.second}"


def compat_document(observations: Iterable[S.Observation], now: dt.datetime) -> dict[str, Any]:
    """The whole data package's data.json from the latest result of every stage of every model
    in every engine release (queries.engine_release_stages)."""
    by_engine: dict[str, list[S.Observation]] = defaultdict(list)
    for o in observations:
        by_engine[o.engine].append(o)
    engines: dict[str, Any] = {}
    support: dict[str, dict[str, list[tuple[str, Verdict]]]] = defaultdict(lambda: defaultdict(list))
    for engine in sorted(by_engine):
        obs = by_engine[engine]
        first: dict[str, dt.datetime] = {}
        for o in obs:
            if o.engine_version not in first or o.started_at < first[o.engine_version]:
                first[o.engine_version] = o.started_at
        versions = sorted(first, key=S.version_key)
        finals = [v for v in versions if _release_status(v, None) == "retired"]
        newest_final = finals[-1] if finals else None
        engines[engine] = {
            "name": engine,
            "releases": {
                v: {
                    "first_probed": S.parse_time(first[v]).isoformat().replace("+00:00", "Z"),
                    "status": _release_status(v, newest_final),
                }
                for v in versions
            },
        }
        for version, verdicts in release_verdicts(obs).items():
            for model, verdict in verdicts.items():
                support[model][engine].append((version, verdict))
    archs: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for model in sorted(support):
        entry = {
            "__compat": {
                "source": model,
                "support": {e: support_statement(h) for e, h in sorted(support[model].items())},
            }
        }
        if model.startswith(ARCH_PREFIX):
            archs[model[len(ARCH_PREFIX) :]] = entry
        else:
            models[model] = entry
    return {
        "__meta": {
            "version": package_version(now),
            "schema_version": SCHEMA_VERSION,
            "timestamp": S.parse_time(now).isoformat().replace("+00:00", "Z"),
            "generator": "dayone",
        },
        "engines": engines,
        "architectures": archs,
        "models": models,
    }


def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


def write_package(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """`dayone export --data DIR`: data.json, schema/compat-data.schema.json, package.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "schema").mkdir(exist_ok=True)
    files = {
        "data.json": doc,
        "schema/compat-data.schema.json": schema(),
        "package.json": {
            "name": PACKAGE_NAME,
            "version": doc["__meta"]["version"],
            "description": "Which engine release supports which open-weight model architecture "
            "and model, since when (dayone; MDN browser-compat-data shape)",
            "main": "data.json",
            "files": ["data.json", "schema/"],
            "dayone": {"schema_version": SCHEMA_VERSION, "timestamp": doc["__meta"]["timestamp"]},
        },
    }
    written = []
    for rel, data in files.items():
        path = out_dir / rel
        path.write_text(
            json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8"
        )
        written.append(path)
    return written
