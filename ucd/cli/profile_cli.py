"""``ucd profile`` (LLM user profiles + embeddings) and ``ucd models prepare`` (the packaged LLM)."""

from __future__ import annotations

import argparse
import json


def _profile(args: argparse.Namespace) -> int:
    from ucd.pipelines.profile_job import run_profile_job
    from ucd.profiles.config import load_profile_config

    cfg = load_profile_config(args.config, list(args.set or []))
    res = run_profile_job(cfg, args.data, args.out)
    print(
        json.dumps(
            {
                "profiles": str(res.profiles),
                "embeddings": str(res.embeddings),
                "counts": res.counts,
                "metrics": res.metrics,
                "mlflow_run_id": res.mlflow_run_id,
            },
            indent=2,
        )
    )
    return 0


def _models_prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ucd.llm.prepare import prepare_packaged

    path = prepare_packaged(
        args.model, Path(args.home) if args.home else None, dtype=args.dtype, force=args.force
    )
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="LLM user profiles and their embeddings (Ray Data + vLLM)")
    p.add_argument("--data", required=True, help="a prepared dataset folder (`ucd data prepare`)")
    p.add_argument("--out", required=True, help="output folder; rerunning into it resumes")
    p.add_argument(
        "--config",
        help="a shipped profile config by name (cpu, gpu) or a YAML path (default: cpu, the embedded CPU setting)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. llm.backend=hf, limit_users=50, embed.reduce.method=pca",
    )
    p.set_defaults(func=_profile)

    m = sub.add_parser("models", help="local models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    mp = msub.add_parser(
        "prepare", help="convert a packaged GGUF (SmolLM2, Qwen2.5-Coder) into a Hugging Face folder (once)"
    )
    mp.add_argument(
        "model",
        nargs="?",
        default="smollm2-135m-instruct",
        help="smollm2-135m-instruct (default) or qwen2.5-coder-1.5b-instruct (needs the llm-qwen extra)",
    )
    mp.add_argument(
        "--home", help="cache root (default $UCD_HOME or ~/.cache/ucd); the folder is <home>/models"
    )
    mp.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default: the model's own")
    mp.add_argument("--force", action="store_true", help="convert again even if the folder is current")
    mp.set_defaults(func=_models_prepare)
