"""How the site's latency grows with the store: p50/p99 of the matrix page and the API on a
small and a large synthetic store, side by side (the ratio large/small is the figure that
matters; flat is the goal).

    python bench/bench_service.py [--large-models 1000 --large-nights 365] [--requests 40]

The stores are filled with bulk inserts straight into the tables ingest writes (results with
their raw record, cell_latest as ingest leaves it), which is orders of magnitude faster than
ingest_records and gives the same rows. Results go to bench/results/service.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STAGES = ("load", "generate", "parity", "serve", "chat_template", "tool_call", "json_schema", "throughput")
ENGINES = (
    "transformers",
    "vllm",
    "llama.cpp",
    "sglang",
    "tgi",
    "mlc",
    "exllamav2",
    "tensorrt-llm",
    "onnxruntime",
    "candle",
)
FAMILIES = ("llama", "qwen3", "gemma3", "mistral", "phi3", "deepseek", "olmo", "granite")
START = dt.datetime(2025, 1, 1, 2, 0)


@dataclass(frozen=True)
class Size:
    name: str
    models: int
    envs: int  # environments: engines x versions
    stages: int
    nights: int

    @property
    def results(self) -> int:
        return self.models * self.envs * self.stages * self.nights


def _ts(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DateTime storage


def fill(path: Path, size: Size, seed: int = 0) -> float:
    """Create the schema (Alembic, through open_store), then bulk-insert `size`. Seconds."""
    from matrix.store import open_store

    t0 = time.perf_counter()
    open_store(f"sqlite:///{path}").close()
    rnd = random.Random(seed)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-1000000")
    con.execute("BEGIN")
    now = _ts(START)
    models = []
    for i in range(size.models):
        family = FAMILIES[i % len(FAMILIES)]
        released = (START + dt.timedelta(days=rnd.randrange(-30, max(1, size.nights // 2)))).date()
        models.append(
            (
                i + 1,
                f"org{i % 37}/{family}-{i}",
                "r1",
                family,
                f"{family.title()}ForCausalLM",
                family,
                released.isoformat(),
                now,
            )
        )
    con.executemany(
        "INSERT INTO model_revisions (id, model_id, revision, model_type, "
        "architecture, family, release_date, created) VALUES (?,?,?,?,?,?,?,?)",
        models,
    )
    envs = []
    for j in range(size.envs):
        engine = ENGINES[j % len(ENGINES)]
        version = f"1.{j // len(ENGINES)}.0"
        envs.append(
            (
                j + 1,
                f"env-{engine}-{version}",
                engine,
                version,
                "cpu",
                json.dumps({"torch": "2.13.0"}),
                None,
                now,
            )
        )
    con.executemany(
        "INSERT INTO environments (id, environment_id, engine_name, engine_version, "
        "hardware, packages, image_digest, created) VALUES (?,?,?,?,?,?,?,?)",
        envs,
    )
    con.executemany(
        "INSERT INTO runs (id, run_id, started_at, dayone_version, host, hardware, "
        "notes) VALUES (?,?,?,?,?,?,?)",
        [
            (n + 1, f"night-{n}", _ts(START + dt.timedelta(days=n)), "0.1.0", "bench", "cpu", None)
            for n in range(size.nights)
        ],
    )
    # Each (model, environment) turns green on some night (or never), with rare noise.
    green_from = {
        (m, e): rnd.choice([0, 0, 1, 3, 7, 20, 60, 10**6])
        for m in range(size.models)
        for e in range(size.envs)
    }
    stages = STAGES[: size.stages]
    rid = 0
    latest: dict[tuple[int, int, str], tuple[int, str, str | None, str]] = {}
    insert = (
        "INSERT INTO results (id, model_revision_pk, environment_pk, run_pk, run_key, "
        "stage, tier, status, failure_class, message, log_excerpt, log_path, metrics, "
        "output, started_at, duration_s, reproduce, raw, ingested_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    # Precomputed pieces: Python string work, not SQLite, is what limits the fill rate.
    variants = {
        "pass": (None, None),
        "error": ("infra", "disk full"),
        "fail": ("unsupported_architecture", "ValueError: model type not recognised"),
        "skipped": (None, "blocked by load (fail)"),
    }
    as_json = {k: (json.dumps(a), json.dumps(b)) for k, (a, b) in variants.items()}
    raw_head = {
        (m[0], e[0]): (
            '{"schema_version":1,"model":{"id":"%s","revision":"r1",'
            '"model_type":"%s","family":"%s"},"engine":{"name":"%s",'
            '"version":"%s","hardware":"cpu","environment_id":"%s"},'
            '"tier":"arch","metrics":{"s":0.1},"duration_s":0.1,'
            '"reproduce":"dayone probe %s --engine %s==%s"'
        )
        % (m[1], m[3], m[3], e[2], e[3], e[1], m[1], e[2], e[3])
        for m in models
        for e in envs
    }
    for night in range(size.nights):
        rows = []
        stamps = [START + dt.timedelta(days=night, seconds=k) for k in range(len(stages))]
        ts = [_ts(t) for t in stamps]
        iso = [t.isoformat() + "Z" for t in stamps]
        run_key = f"night-{night}"
        for m, model in enumerate(models):
            for e, env in enumerate(envs):
                green = night >= green_from[(m, e)]
                noise = rnd.random()
                head = raw_head[(model[0], env[0])]
                for k, stage in enumerate(stages):
                    rid += 1
                    if green:
                        status = "error" if noise < 0.005 else "pass"
                    else:
                        status = "fail" if k == 0 else "skipped"
                    fclass, message = variants[status]
                    jclass, jmessage = as_json[status]
                    raw = (
                        f'{head},"run_id":"{run_key}","stage":"{stage}","status":"{status}",'
                        f'"failure_class":{jclass},"message":{jmessage},'
                        f'"started_at":"{iso[k]}"}}'
                    )
                    rows.append(
                        (
                            rid,
                            model[0],
                            env[0],
                            night + 1,
                            run_key,
                            stage,
                            "arch",
                            status,
                            fclass,
                            message,
                            None,
                            None,
                            '{"s":0.1}',
                            None,
                            ts[k],
                            0.1,
                            None,
                            raw,
                            now,
                        )
                    )
                    latest[(model[0], env[0], stage)] = (rid, status, fclass, ts[k])
        con.executemany(insert, rows)
    con.executemany(
        "INSERT INTO cell_latest (model_revision_pk, environment_pk, stage, model_id, "
        "engine_name, engine_version, result_pk, status, failure_class, started_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (mpk, epk, stage, models[mpk - 1][1], envs[epk - 1][2], envs[epk - 1][3], r, s, fc, t)
            for (mpk, epk, stage), (r, s, fc, t) in latest.items()
        ],
    )
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()
    return time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


TARGETS = {
    "matrix page /": "/",
    "matrix API /api/v1/matrix": "/api/v1/matrix",
    "matrix API, engine filter": "/api/v1/matrix?engine=vllm",
    "results API (model, 100)": "/api/v1/results?model={model}&limit=100",
    "cell page JSON": "/cells/{model}/vllm.json",
    "model page JSON": "/models/{model}.json",
    "badge": "/badge/{model}/vllm.svg",
    "healthz": "/healthz",
}


def measure(paths: dict[str, Path], requests: int) -> dict[str, dict[str, dict[str, float]]]:
    """Every endpoint on every store, the stores taking turns request by request, so that
    load from elsewhere on the machine falls on all of them alike (the ratios stay honest)."""
    from contextlib import ExitStack

    from fastapi.testclient import TestClient

    from service.app import create_app

    model = "org0/llama-0"
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in paths}
    with ExitStack() as stack:
        clients = {
            name: stack.enter_context(TestClient(create_app(f"sqlite:///{path}")))
            for name, path in paths.items()
        }
        for client in clients.values():
            client.get("/?per_page=1&nights=0")  # compile the templates (not a store cost)
        for label, template in TARGETS.items():
            url = template.format(model=model)
            times: dict[str, list[float]] = {name: [] for name in clients}
            for name, client in clients.items():
                t0 = time.perf_counter()
                first = client.get(url)  # cold: nothing of this page in the process yet
                cold = time.perf_counter() - t0
                assert first.status_code == 200, (url, first.status_code, first.text[:300])
                out[name][label] = {"cold_ms": 1000 * cold, "bytes": len(first.content)}
            for _ in range(requests):
                for name, client in clients.items():
                    t0 = time.perf_counter()
                    r = client.get(url)
                    times[name].append(time.perf_counter() - t0)
                    assert r.status_code == 200
            for name in clients:
                out[name][label]["p50_ms"] = 1000 * percentile(times[name], 0.5)
                out[name][label]["p99_ms"] = 1000 * percentile(times[name], 0.99)
    return out


def parse_sizes(text: str, envs: int, stages: int) -> list[Size]:
    out = []
    for item in text.split(","):
        name, models, nights = item.split(":")
        out.append(Size(name, int(models), envs, stages, int(nights)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--sizes",
        default="small:50:14,long:50:365,large:1000:60",
        help="NAME:MODELS:NIGHTS,... (the first is the baseline of the ratios)",
    )
    ap.add_argument("--envs", type=int, default=20)
    ap.add_argument("--stages", type=int, default=8)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--dir", type=Path, default=None, help="where the stores go (default: tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the filled stores")
    ap.add_argument(
        "--reuse", action="store_true", help="use stores a --keep run left in --dir when their size matches"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service.json")
    args = ap.parse_args()

    sizes = parse_sizes(args.sizes, args.envs, args.stages)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="dayone-bench-"))
    report: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "requests_per_endpoint": args.requests,
        "note": "p50/p99 are warm (the process has served the page before); "
        "cold_ms is the first request after start; the stores take "
        "turns request by request",
        "sizes": {},
    }
    paths: dict[str, Path] = {}
    for size in sizes:
        path = workdir / f"{size.name}.db"
        marker = path.with_suffix(".json")
        info = {**asdict(size), "results": size.results}
        if (
            args.reuse
            and path.exists()
            and marker.exists()
            and json.loads(marker.read_text())["size"] == info
        ):
            fill_s = json.loads(marker.read_text())["fill_s"]
            print(f"reusing {path} ({size.results:,} results)", flush=True)
        else:
            for old in (path, marker):
                old.unlink(missing_ok=True)
            print(
                f"filling {size.name}: {size.models} models x {size.envs} environments x "
                f"{size.stages} stages x {size.nights} nights = {size.results:,} results ...",
                flush=True,
            )
            fill_s = fill(path, size)
            marker.write_text(json.dumps({"size": info, "fill_s": fill_s}))
        mb = path.stat().st_size / 2**20
        print(f"  {fill_s:.0f} s to fill, {mb:.0f} MiB", flush=True)
        paths[size.name] = path
        report["sizes"][size.name] = {**info, "fill_s": round(fill_s, 1), "db_mib": round(mb)}
    measured = measure(paths, args.requests)
    for size in sizes:
        report["sizes"][size.name]["endpoints"] = measured[size.name]
        if not args.keep:
            paths[size.name].unlink()
            paths[size.name].with_suffix(".json").unlink()
    base = sizes[0].name
    report["ratio_p50_over_" + base] = {}
    for other in sizes[1:]:
        a, b = measured[base], measured[other.name]
        head = (
            f"{'endpoint':28} {base + ' p50':>11} {'p99':>7} {'cold':>7} | "
            f"{other.name + ' p50':>11} {'p99':>7} {'cold':>7} | {'ratio p50':>9}"
        )
        print(
            f"\n{base} ({sizes[0].results:,} results) vs {other.name} "
            f"({other.results:,} results)\n{head}\n{'-' * len(head)}"
        )
        ratios = {}
        for name in a:
            ratio = b[name]["p50_ms"] / a[name]["p50_ms"]
            ratios[name] = round(ratio, 2)
            print(
                f"{name:28} {a[name]['p50_ms']:9.1f}ms {a[name]['p99_ms']:5.0f}ms "
                f"{a[name]['cold_ms']:5.0f}ms | {b[name]['p50_ms']:9.1f}ms "
                f"{b[name]['p99_ms']:5.0f}ms {b[name]['cold_ms']:5.0f}ms | {ratio:8.2f}x"
            )
        report["ratio_p50_over_" + base][other.name] = ratios
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
