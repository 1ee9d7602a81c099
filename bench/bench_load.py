"""The API under a bounded local load: a large synthetic store, uvicorn on loopback, a fixed
number of requests from a few concurrent clients. Prints requests/s, p50, p99 and errors;
writes bench/results/load.json (docs/reliability.md's load table comes from it).

    python bench/bench_load.py [--models 200 --nights 30] [--requests 2000] [--concurrency 1,8]

Loopback only (127.0.0.1), nothing else is contacted. An error is any non-2xx/3xx answer or a
transport failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_service import TARGETS, Size, fill, percentile  # noqa: E402

OUT = ROOT / "bench" / "results" / "load.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(db: Path, port: int) -> subprocess.Popen:
    code = (
        "import uvicorn; from service.app import create_app; "
        f"uvicorn.run(create_app('sqlite:///{db}'), host='127.0.0.1', port={port}, "
        "log_level='warning')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not come up")


def load(base: str, paths: list[str], requests: int, concurrency: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=60) as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = client.get(paths[i % len(paths)])
                    ok = r.status_code < 400
                    why = f"{r.status_code} {paths[i % len(paths)]}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__} {paths[i % len(paths)]}"
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    latencies.append(dt)
                    if not ok:
                        errors.append(why)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "requests": requests,
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "rps": requests / wall,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "errors": len(errors),
        "error_samples": errors[:5],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--envs", type=int, default=10)
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--nights", type=int, default=30)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", default="1,8")
    a = ap.parse_args()
    size = Size("load", a.models, a.envs, a.stages, a.nights)
    with tempfile.TemporaryDirectory(prefix="dayone-load-") as tmp:
        db = Path(tmp) / "dayone.db"
        fill_s = fill(db, size)
        print(f"store: {size.results} results, {size.models} models, filled in {fill_s:.1f} s")
        model = "org0/model-0001"
        import sqlite3

        with sqlite3.connect(db) as con:
            row = con.execute("select model_id from model_revisions limit 1").fetchone()
            model = row[0] if row else model
        paths = [t.format(model=model) for t in TARGETS.values()]
        port = free_port()
        server = serve(db, port)
        try:
            runs = []
            for c in (int(x) for x in a.concurrency.split(",")):
                run = load(f"http://127.0.0.1:{port}", paths, a.requests, c)
                print(
                    f"{run['requests']} requests, concurrency {c}: {run['rps']:.0f} req/s, "
                    f"p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, "
                    f"errors {run['errors']}"
                )
                runs.append(run)
        finally:
            server.terminate()
            server.wait(timeout=30)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "store": {
                    "results": size.results,
                    "models": size.models,
                    "envs": size.envs,
                    "stages": size.stages,
                    "nights": size.nights,
                    "fill_s": round(fill_s, 1),
                },
                "paths": paths,
                "runs": runs,
                "host": f"{platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}",
            },
            indent=1,
        )
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
