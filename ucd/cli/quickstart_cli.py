"""``ucd quickstart``: the whole pipeline end to end on the embedded default."""

from __future__ import annotations

import argparse
from pathlib import Path


def _quickstart(args: argparse.Namespace) -> int:
    from ucd.pipelines.quickstart import load_quickstart_config, run_quickstart

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"out={args.out}")
    if args.no_serve:
        overrides.append("serve=false")
    if args.full:
        overrides.append("full=true")
    cfg = load_quickstart_config(args.config, overrides)
    run_quickstart(cfg, data_dir=Path(args.data_dir) if args.data_dir else None)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart",
        help="prepare ML-100K, profile users with the LLM, train baseline and distilled SASRec, "
        "compare, register, serve",
    )
    p.add_argument("--out", help="output folder (default out/quickstart)")
    p.add_argument(
        "--full",
        action="store_true",
        help="profile every user and train with the model config's full budget (~65 min on 2 CPU cores; "
        "the default profiles a seeded 6%% of the users with a shorter budget, ~11 min)",
    )
    p.add_argument("--config", help="YAML QuickstartConfig")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="e.g. quick.user_share=0.2 or train_overrides=[epochs=5]",
    )
    p.add_argument("--data-dir", help="folder holding ml-100k/ (default $UCD_DATA_DIR or ../shared/data)")
    p.add_argument("--no-serve", action="store_true", help="stop after registering the model")
    p.set_defaults(func=_quickstart)
