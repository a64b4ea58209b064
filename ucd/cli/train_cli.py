"""``ucd train``, ``ucd evaluate`` and ``ucd registry``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load_train_config(args: argparse.Namespace):
    from ucd.config import build_config, find_config
    from ucd.train.config import TrainConfig

    overrides = list(args.set or [])
    if args.data:
        overrides.append(f"data={args.data}")
    if getattr(args, "profiles", None):
        # Profiles given on the command line switch distillation on: the one key that does.
        overrides += [f"profiles={args.profiles}", "distill.enabled=true"]
    paths = [find_config("train", c) for c in args.config or []]
    cfg = build_config(TrainConfig, paths, overrides)
    if not cfg.data:
        from ucd.errors import ConfigError

        raise ConfigError("no dataset: pass --data <prepared folder> or set `data:` in the config")
    return cfg


def _train(args: argparse.Namespace) -> int:
    from ucd.pipelines.train_job import run_training

    res = run_training(load_train_config(args))
    print(
        json.dumps(
            {
                "run_name": res.run_name,
                "mlflow_run_id": res.run_id,
                "model_dir": str(res.model_dir),
                "model_version": res.model_version,
                "best_epoch": res.best_epoch,
                "record_key": res.keys.record,
                **res.test,
            },
            indent=2,
        )
    )
    return 0


def _profile_only_specs(specs: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        out.append((f"profile-only[{name}]", path) if sep else ("profile-only", name))
    return out


def _evaluate(args: argparse.Namespace) -> int:
    from ucd.data.tensors import SequenceData
    from ucd.evaluate.offline import (
        compare,
        evaluate_model,
        evaluate_most_popular,
        evaluate_profile_only_reference,
        format_comparison,
    )

    data = SequenceData.load(args.data)
    if args.compare:
        variants, models = {}, {}
        for spec in args.compare:
            name, _, uris = spec.partition("=")
            if not uris:
                from ucd.errors import ConfigError

                raise ConfigError(f"--compare {spec!r}: expected NAME=MODEL[,MODEL...]")
            models[name] = uris.split(",")
            variants[name] = [
                evaluate_model(u, data, args.split, args.exclude_seen, name=name) for u in models[name]
            ]
        if args.most_popular:
            variants["most-popular"] = [evaluate_most_popular(data, args.split, args.exclude_seen)]
        for name, path in _profile_only_specs(args.profile_only):
            variants[name] = [
                evaluate_profile_only_reference(args.data, data, path, args.split, args.exclude_seen, name)
            ]
        report = compare(variants)
        report["models"] = models
        table = format_comparison(report)
        print(table)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))
        if args.md:
            Path(args.md).write_text(table + "\n")
        return 0
    results = [evaluate_model(m, data, args.split, args.exclude_seen) for m in args.model or []]
    if args.most_popular:
        results.append(evaluate_most_popular(data, args.split, args.exclude_seen))
    for name, path in _profile_only_specs(args.profile_only):
        results.append(
            evaluate_profile_only_reference(args.data, data, path, args.split, args.exclude_seen, name)
        )
    if not results:
        from ucd.errors import ConfigError

        raise ConfigError("nothing to evaluate: pass --model, --compare, --most-popular or --profile-only")
    out = {r.name: r.metrics for r in results}
    print(json.dumps({"split": args.split, "exclude_seen": args.exclude_seen, "results": out}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


def _promote(args: argparse.Namespace) -> int:
    from ucd.tracking.runs import TrackingConfig, promote

    cfg = TrackingConfig(uri=args.tracking_uri or "")
    version = promote(cfg, args.name, args.version, args.alias, args.from_alias)
    print(f"{args.name} version {version} is now @{args.alias}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a student (optionally distilled) with Ray Train")
    p.add_argument(
        "--config",
        action="append",
        help="a shipped model config by name (ml-100k-sasrec, beauty-bert4rec, ...) or a YAML path; "
        "repeatable, later files override earlier ones (e.g. --config beauty-sasrec-paper --config gpu-cluster)",
    )
    p.add_argument("--data", help="prepared dataset folder (overrides `data:`)")
    p.add_argument(
        "--profiles",
        help="profile_embeddings.parquet or its folder: sets `profiles:` and switches distillation on",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. ray.num_workers=4")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="full-ranking evaluation and comparisons")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument(
        "--model", action="append", help="model folder or MLflow URI (models:/name@alias); repeatable"
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="NAME=MODEL[,MODEL...]",
        help="variants (seeds comma-separated); the first is the baseline",
    )
    p.add_argument("--most-popular", action="store_true", help="add the most-popular reference")
    p.add_argument(
        "--profile-only",
        action="append",
        metavar="[NAME=]PROFILES",
        help="add the profile-only reference: cosine between each user's profile vector "
        "(profile_embeddings.parquet or its folder) and the items' text vectors; repeatable",
    )
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--exclude-seen", action="store_true", help="remove history items from the ranking")
    p.add_argument("--out", help="write the report as JSON")
    p.add_argument("--md", help="with --compare: also write the table as Markdown")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("registry", help="MLflow model registry")
    rsub = p.add_subparsers(dest="registry_cmd", required=True)
    q = rsub.add_parser("promote", help="point an alias (default production) at a model version")
    q.add_argument("--name", default="ucd-student")
    q.add_argument("--version", help="model version; or use --from-alias")
    q.add_argument("--from-alias", help="promote whatever this alias points to (e.g. candidate)")
    q.add_argument("--alias", default="production")
    q.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the local SQLite store")
    q.set_defaults(func=_promote)
