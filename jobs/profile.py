"""Entry point for `ray job submit --working-dir . -- python jobs/profile.py --data D --out O ...`.

Connects to the cluster the job runs on ($RAY_ADDRESS) and runs the profile pipeline; the
same arguments as `ucd profile`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# `python jobs/profile.py` puts jobs/ first on sys.path, where this file would shadow the
# standard library's `profile` (cProfile, hence transformers, imports it); the working dir
# that holds ucd/ is what belongs there.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ucd.errors import UcdError
    from ucd.pipelines.profile_job import run_profile_job
    from ucd.profiles.config import load_profile_config

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    try:
        cfg = load_profile_config(args.config, list(args.set or []))
        res = run_profile_job(cfg, args.data, args.out)
    except UcdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"profiles: {res.profiles}\nembeddings: {res.embeddings}\ncounts: {res.counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
