"""Serving load test: the Ray Serve application on 127.0.0.1 at several concurrencies, beside a
direct in-process call of the same model on the same requests, and the cost per user of the
student against writing that user's profile with the LLM. Prints a table and writes JSON.

    .venv/bin/python benchmarks/serve_load.py [--data out/ml-100k] [--model models:/ucd-student@production]
        [--requests 300] [--concurrency 1 8 32] [--llm-seconds-per-user 0.75]

Requests are by user id (history looked up server-side, exclude_seen on, k=10). Without
``--model`` the model is an untrained SASRec of the ML-100K config's shape: latency does not
depend on the weights, and the output says so. The load generator (Python threads) shares the
machine with the server, so on a small machine it is part of what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ucd.config import default_data_dir, find_config, load_yaml  # noqa: E402
from ucd.serving import Recommender  # noqa: E402

PROFILE_JSON = ROOT / "benchmarks/results/profile_throughput.json"


def percentiles(lat_s: list[float]) -> dict[str, float]:
    ms = np.asarray(lat_s) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}


def untrained_model(data: Path, out: Path) -> Path:
    from ucd.data.tensors import SequenceData
    from ucd.models import StudentConfig, build_student
    from ucd.train.model_dir import save_student

    shape = load_yaml(find_config("train", "ml-100k-sasrec"))["model"]
    seq = SequenceData.load(data)
    cfg = StudentConfig(**shape, n_items=seq.n_items)
    torch.manual_seed(0)
    model = build_student(cfg)
    return save_student(out, model.state_dict(), cfg, {"dataset": seq.dataset}, data / "items.parquet")


def llm_seconds_per_user(arg: float | None, source: str | None) -> tuple[float | None, str]:
    if arg is not None:
        return arg, f"--llm-seconds-per-user ({source or 'given, source not stated'})"
    if PROFILE_JSON.exists():
        res = json.loads(PROFILE_JSON.read_text())
        rows = res.get("rows", {})
        for key in ("a_pipeline_vllm", "b_bare_vllm_generate_only"):
            ups = rows.get(key, {}).get("users_per_s")
            if ups:
                return 1.0 / ups, f"{PROFILE_JSON.relative_to(ROOT)} rows.{key} ({res.get('users')} users)"
    return None, "not available: run benchmarks/profile_throughput.py or pass --llm-seconds-per-user"


def direct(rec: Recommender, bodies: list[dict], batch: int) -> dict:
    """The same requests through the same core in this process, one by one and in batches."""
    for b in bodies[:20]:
        rec.recommend([b])
    lat = []
    t0 = time.perf_counter()
    for b in bodies:
        t = time.perf_counter()
        rec.recommend([b])
        lat.append(time.perf_counter() - t)
    single = {"rps": round(len(bodies) / (time.perf_counter() - t0), 1), **percentiles(lat)}
    t0 = time.perf_counter()
    for i in range(0, len(bodies), batch):
        rec.recommend(bodies[i : i + batch])
    batched = {"rps": round(len(bodies) / (time.perf_counter() - t0), 1), "batch": batch}
    return {"single": single, "batched": batched}


def load(url: str, bodies: list[dict | None], concurrency: int, timeout: float) -> tuple[dict, list[float]]:
    """``concurrency`` closed-loop clients share the requests; latency is per request.

    A ``None`` body is a ``GET /healthz``: Serve's own proxy/routing cost, no model.
    """
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    it = iter(bodies)

    def client() -> None:
        s = requests.Session()
        while True:
            with lock:
                body = next(it, False)
            if body is False:
                return
            t = time.perf_counter()
            try:
                if body is None:
                    r = s.get(f"{url}/healthz", timeout=timeout)
                else:
                    r = s.post(f"{url}/recommend", json=body, timeout=timeout)
                ok = r.status_code == 200
            except requests.RequestException as e:
                ok, r = False, e
            dt = time.perf_counter() - t
            with lock:
                if ok:
                    lat.append(dt)
                else:
                    errors.append(str(getattr(r, "status_code", r)))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "errors": len(errors),
        "rps": round(len(lat) / wall, 1),
    }, lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="prepared dataset (default: ML-100K prepared into a temp folder)")
    ap.add_argument("--model", help="model folder or MLflow URI (default: untrained SASRec, ML-100K shape)")
    ap.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-s", type=float, default=0.005)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--timeout-s", type=float, default=30.0)
    ap.add_argument(
        "--llm-seconds-per-user", type=float, help="default: read benchmarks/results/profile_throughput.json"
    )
    ap.add_argument("--llm-source", help="where --llm-seconds-per-user comes from (kept in the output)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/serve_load.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ucd-serve-load-"))
    if args.data:
        data = Path(args.data)
    else:
        from ucd.data.prepare import prepare_named

        data = prepare_named(
            "ml-100k", tmp / "ml-100k", protocol="loo", data_dir=default_data_dir(), log=lambda *_: None
        )
    weights = "given"
    if args.model:
        model = args.model
    else:
        model, weights = (
            str(untrained_model(data, tmp / "model")),
            "untrained (random init; speed does not depend on weights)",
        )

    # One torch thread, as in the replica (num_cpus=1): the comparison is like for like.
    torch.set_num_threads(1)
    rec = Recommender.load(model, str(data))
    rng = np.random.default_rng(0)
    users = rng.choice(np.flatnonzero(rec.histories.row_of_user >= 0), size=args.requests, replace=True)
    bodies = [{"user_id": int(u), "k": args.k} for u in users]
    base = direct(rec, bodies, args.max_batch_size)

    import ray
    from ray import serve

    from ucd.pipelines import serve_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(
        num_cpus=os.cpu_count(),
        object_store_memory=150 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
    )
    levels = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        handle = serve_app.deploy(
            {
                "name": "ucd-bench",
                "model": model,
                "data": str(data),
                "max_batch_size": args.max_batch_size,
                "batch_wait_timeout_s": args.batch_wait_s,
                "num_cpus": 1,
            }
        )
        url = f"http://127.0.0.1:{port}"
        load(url, bodies[:30], 4, args.timeout_s)  # warm-up: connections, first batches
        row, lat = load(url, [None] * len(bodies), 1, args.timeout_s)
        health = {**row, **percentiles(lat)}
        for c in args.concurrency:
            handle.reset_stats.remote().result()
            row, lat = load(url, bodies, c, args.timeout_s)
            st = handle.get_stats.remote().result()
            row.update(percentiles(lat) if lat else {})
            row["mean_batch"] = round(st["mean_batch_size"], 2)
            row["max_batch"] = st["max_batch_size_seen"]
            levels.append(row)
    finally:
        serve.shutdown()
        ray.shutdown()

    one = next((r for r in levels if r["concurrency"] == 1), levels[0])
    best = max(levels, key=lambda r: r["rps"])
    llm_s, llm_src = llm_seconds_per_user(args.llm_seconds_per_user, args.llm_source)
    student_s = 1.0 / best["rps"]
    result = {
        "dataset": str(data),
        "model": model,
        "weights": weights,
        "n_items": rec.n_items,
        "max_len": rec.max_len,
        "k": args.k,
        "max_batch_size": args.max_batch_size,
        "batch_wait_timeout_s": args.batch_wait_s,
        "direct": base,
        "serving": levels,
        "serve_healthz_c1": health,
        "overhead": {
            "latency_p50_serving_c1_over_direct_single": round(one["p50_ms"] / base["single"]["p50_ms"], 2),
            "throughput_direct_batched_over_best_serving": round(base["batched"]["rps"] / best["rps"], 2),
        },
        "cost_per_user": {
            "student_serving_s": round(student_s, 5),
            "student_direct_batched_s": round(1.0 / base["batched"]["rps"], 6),
            "llm_profile_s": None if llm_s is None else round(llm_s, 3),
            "llm_over_student_serving": None if llm_s is None else round(llm_s / student_s, 1),
            "llm_source": llm_src,
            "note": "wall-seconds of this whole machine per user; both sides measured on it",
        },
        "cpu_count": os.cpu_count(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"model {model} [{weights}], {rec.n_items} items, max_len {rec.max_len}, k={args.k}")
    print(
        f"{'path':26s} {'conc':>4s} {'req/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'batch':>6s}"
    )
    d = base["single"]
    print(
        f"{'direct, one by one':26s} {1:4d} {d['rps']:8.1f} {d['p50_ms']:8.2f} {d['p95_ms']:8.2f} {d['p99_ms']:8.2f} {1:6d}"
    )
    print(
        f"{'direct, batched':26s} {'-':>4s} {base['batched']['rps']:8.1f} {'':8s} {'':8s} {'':8s} {args.max_batch_size:6d}"
    )
    h = health
    print(
        f"{'serve HTTP GET /healthz':26s} {1:4d} {h['rps']:8.1f} {h['p50_ms']:8.2f} {h['p95_ms']:8.2f} {h['p99_ms']:8.2f}"
    )
    for r in levels:
        print(
            f"{'serve HTTP':26s} {r['concurrency']:4d} {r['rps']:8.1f} {r.get('p50_ms', float('nan')):8.2f} "
            f"{r.get('p95_ms', float('nan')):8.2f} {r.get('p99_ms', float('nan')):8.2f} {r['mean_batch']:6.2f}"
            + (f"  errors {r['errors']}" if r["errors"] else "")
        )
    for k, v in result["overhead"].items():
        print(f"{k:50s} {v}")
    for k, v in result["cost_per_user"].items():
        print(f"{k:50s} {v}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
