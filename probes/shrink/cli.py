"""`python -m probes.shrink`: see the package docstring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from probes.shrink import __doc__ as USAGE
from probes.shrink.build import check_generates, shrink_path
from probes.shrink.catalogue import shrink_model_type, sweep, sweep_types
from probes.shrink.rules import ShrinkError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m probes.shrink",
        description=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", nargs="?", help="config.json or a directory holding one")
    parser.add_argument("out_dir", nargs="?")
    parser.add_argument(
        "--model-type",
        help="shrink transformers' default config of this type (or override the source's model_type)",
    )
    parser.add_argument("--check", action="store_true", help="generate a few tokens after")
    parser.add_argument("--list-types", action="store_true")
    parser.add_argument("--sweep", metavar="OUT_ROOT")
    parser.add_argument("--types", help="comma-separated model types for --sweep")
    parser.add_argument("--report", help="write the sweep's rows (JSON) here")
    parser.add_argument(
        "--no-generate", action="store_true", help="--sweep: build only (the engines' probes generate)"
    )
    parser.add_argument("--meta", help="JSON object for dayone.json (id, revision, ...)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.list_types:
        print("\n".join(sweep_types()))
        return 0
    if args.sweep:
        types = [t for t in (args.types or "").split(",") if t] or None

        def show(model_type: str, row: dict[str, Any]) -> None:
            mark = "ok" if row["status"] == "ok" else f"ERROR {row.get('why', '')[:160]}"
            print(f"{model_type:28s} {row['seconds']:6.2f}s {mark}", flush=True)

        rows = sweep(Path(args.sweep), types, progress=show, generate=not args.no_generate)
        ok = sum(r["status"] == "ok" for r in rows)
        what = "shrunk" if args.no_generate else "shrunk and generated"
        print(f"{what}: {ok}/{len(rows)} ({100.0 * ok / max(1, len(rows)):.1f}%)")
        if args.report:
            Path(args.report).write_text(
                json.dumps({"ok": ok, "total": len(rows), "rows": rows}, indent=2) + "\n"
            )
        return 0
    if args.model_type and args.source and not args.out_dir:
        args.source, args.out_dir = None, args.source  # `--model-type T OUT_DIR`
    if not args.out_dir or not (args.source or args.model_type):
        parser.error("give CONFIG_OR_DIR OUT_DIR, or --model-type T OUT_DIR")
    try:
        meta = json.loads(args.meta) if args.meta else None
        if args.source and args.out_dir:
            result = shrink_path(
                Path(args.source), Path(args.out_dir), model_type=args.model_type, seed=args.seed, meta=meta
            )
        else:
            result = shrink_model_type(args.model_type, Path(args.out_dir), seed=args.seed)
        report = result.as_dict()
        if args.check:
            report["tokens"] = check_generates(result.out_dir)
    except ShrinkError as exc:
        print(json.dumps({"status": "error", "why": str(exc)}))
        return 2
    print(json.dumps({"status": "ok", **report}))
    return 0
