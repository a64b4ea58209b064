"""Preprocessing at scale: time and peak memory of `ucd data prepare` on synthetic data.

Each size runs in its own process, so its peak RSS is its own. Prints a table and writes JSON.

    .venv/bin/python benchmarks/prepare_scale.py --sizes 1000000 20000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from ucd.data.prepare import load_prepare_config, prepare
n, out, protocol = int(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = load_prepare_config("synthetic", None, [
    f"dataset.synthetic.n_interactions={n}", f"dataset.synthetic.n_users={max(n // 20, 100)}",
    f"dataset.synthetic.n_items={max(n // 200, 200)}", "dataset.synthetic.n_genres=20",
    f"split.protocol={protocol}",
])
t = time.perf_counter()
prepare(cfg, out, log=lambda *_: None)
dt = time.perf_counter() - t
s = json.load(open(out + "/summary.json"))
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "interactions": s["interactions"], "users": s["users"], "items": s["items"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 20_000_000])
    ap.add_argument("--protocol", default="loo", choices=["loo", "temporal"])
    ap.add_argument("--json", default="benchmarks/results/prepare_scale.json")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            res = subprocess.run(
                [sys.executable, "-c", CHILD, str(n), f"{tmp}/out", args.protocol],
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                sys.exit(f"size {n} failed:\n{res.stderr}")
            row = {
                "requested": n,
                "protocol": args.protocol,
                **json.loads(res.stdout.strip().splitlines()[-1]),
            }
            row["wall_seconds_with_startup"] = time.perf_counter() - t
            rows.append(row)
    print(f"{'rows':>12} {'users':>9} {'items':>7} {'prepare s':>10} {'peak RSS MB':>12} {'M rows/s':>9}")
    for r in rows:
        print(
            f"{r['interactions']:>12,} {r['users']:>9,} {r['items']:>7,} {r['seconds']:>10.1f} {r['peak_rss_mb']:>12.0f} {r['interactions'] / r['seconds'] / 1e6:>9.2f}"
        )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"benchmark": "prepare_scale", "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
