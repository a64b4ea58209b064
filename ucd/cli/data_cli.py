"""``ucd data ...``: prepare public datasets into the Parquet contracts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _prepare(args: argparse.Namespace) -> int:
    from ucd.data.prepare import load_prepare_config, prepare

    overrides = list(args.set or [])
    if args.split:
        overrides.append(f"split.protocol={args.split}")
    cfg = load_prepare_config(args.dataset, args.config, overrides)
    prepare(cfg, args.out, data_dir=Path(args.data_dir) if args.data_dir else None, force=args.force)
    return 0


def _list(args: argparse.Namespace) -> int:
    from ucd.config import default_data_dir
    from ucd.data.registry import NAMED, dataset_folder, resolve_dataset

    base = Path(args.data_dir) if args.data_dir else default_data_dir()
    print(f"data dir: {base or '(none: set UCD_DATA_DIR)'}")
    for name in NAMED:
        cfg = resolve_dataset(name)
        if cfg.format == "synthetic":
            state = "generated"
        elif base is None:
            state = "?"
        else:
            state = "present" if dataset_folder(cfg, base).is_dir() else "missing"
        print(f"  {name:10s} {cfg.format:10s} {cfg.domain:9s} {state}")
    print("  amazon2014/<Category>, amazon2018/<Category>, amazon2023/<Category>")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from ucd.data.prepare import SUMMARY, format_summary, load_manifest

    load_manifest(args.folder)
    summary = json.loads((Path(args.folder) / SUMMARY).read_text())
    print(format_summary(summary))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare datasets (readers, filtering, splits)")
    dsub = data.add_subparsers(dest="data_cmd", required=True)

    p = dsub.add_parser("prepare", help="raw public files -> items/users/interactions/sequences Parquet")
    p.add_argument("dataset", help="a name (see `ucd data list`) or a YAML dataset config")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--split", choices=["loo", "temporal"], help="evaluation protocol (default loo)")
    p.add_argument("--config", help="YAML with preprocess:/split: sections")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. preprocess.min_user_interactions=10",
    )
    p.add_argument(
        "--data-dir", help="folder holding the raw datasets (default $UCD_DATA_DIR or ../shared/data)"
    )
    p.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    p.set_defaults(func=_prepare)

    p = dsub.add_parser("list", help="named datasets and whether their files are present")
    p.add_argument("--data-dir")
    p.set_defaults(func=_list)

    p = dsub.add_parser("summary", help="print the summary of a prepared folder")
    p.add_argument("folder")
    p.set_defaults(func=_summary)
