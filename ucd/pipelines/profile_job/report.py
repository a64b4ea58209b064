"""What a finished profile job reports: summary.json, a profile sample, MLflow, the console."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ucd.config import dump_config
from ucd.llm.prepare import model_name
from ucd.pipelines.profile_job.plan import ProfilePlan
from ucd.profiles.checks import FAILED, OK, TRUNCATED


@dataclass
class ProfileResult:
    out: Path
    profiles: Path
    embeddings: Path
    run_fingerprint: str
    counts: dict[str, int]
    metrics: dict[str, float]
    rounds: int
    mlflow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProfileOutcome:
    """What the rounds and the assembly produced, for the report."""

    users: list[int]
    rounds: int
    summary: dict[str, Any]  # assemble_profiles' counts
    finals: pa.Table
    progress: dict[str, Any]  # Progress.snapshot() at the end
    stages: dict[str, Any]  # where the wall time went
    wall_s: float


def profile_metrics(o: ProfileOutcome) -> dict[str, float]:
    s, stages, snap = o.summary, o.stages, o.progress
    flagged = s["counts"][FAILED] + s["counts"][TRUNCATED]
    return {
        "wall_s": round(o.wall_s, 2),
        "rounds": o.rounds,
        "users_per_s": snap["users_per_s"],
        "prompt_tokens_per_s": snap["prompt_tokens_per_s"],
        "output_tokens_per_s": snap["output_tokens_per_s"],
        "requests": s["requests"],
        "retried_requests": s["retried_requests"],
        **{f"n_{k}": v for k, v in s["counts"].items()},
        "flagged_share": round(flagged / max(len(o.users), 1), 4),
        "ray_start_s": stages["ray_start_s"],
        "assemble_s": stages["assemble_s"],
        **({"first_result_s": stages["rounds"][0]["first_result_s"] or 0.0} if stages["rounds"] else {}),
    }


def write_profile_summary(plan: ProfilePlan, o: ProfileOutcome, metrics: dict[str, float]) -> None:
    """summary.json (the run's record) and sample_profiles.json (a readable sample)."""
    cfg = plan.cfg
    record = {
        "run_fingerprint": plan.run_fp,
        "dataset": plan.prepared.dataset,
        "users": len(o.users),
        "user_share": cfg.user_share,
        "model": model_name(cfg.llm.model),
        "prompt_version": plan.tpl.version,
        "backend": cfg.llm.backend,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        **o.summary,
        "metrics": metrics,
        "stages": o.stages,
        "config": dump_config(cfg),
    }
    (plan.out / "summary.json").write_text(json.dumps(record, indent=2, default=str))
    cols = ["user_id", "status", "reason", "n_history", "attempt", "text"]
    sample = o.finals.select(cols).slice(0, cfg.sample_size).to_pylist()
    (plan.out / "sample_profiles.json").write_text(json.dumps(sample, indent=2, default=str))


def log_profile_mlflow(active, out: Path, metrics: dict[str, float]) -> str | None:
    """Metrics and both JSON files on the active MLflow run; its id (None without tracking)."""
    if active is None:
        return None
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    mlflow.log_artifact(str(out / "sample_profiles.json"))
    mlflow.log_artifact(str(out / "summary.json"))
    return active.info.run_id


def log_profile_done(plan: ProfilePlan, o: ProfileOutcome, log: Callable[[str], None]) -> None:
    c, stages = o.summary["counts"], o.stages
    log(
        f"[profile] done: {len(o.users)} users in {o.wall_s:.1f}s over {o.rounds} round(s) | ok {c[OK]} | "
        f"truncated {c[TRUNCATED]} | failed {c[FAILED]} | retried requests {o.summary['retried_requests']} | "
        f"-> {plan.out / 'profiles.parquet'}"
    )
    llm = stages.get("llm", {})
    engines = f", LLM engine up after {llm['ready_s']}s" if llm.get("ready_s") else ""
    log(
        f"[profile] time: setup {stages['setup_s']}s, ray start {stages['ray_start_s']}s{engines}, rounds "
        + ", ".join(f"{r['seconds']}s (first result after {r['first_result_s']}s)" for r in stages["rounds"])
        + f", assemble {stages['assemble_s']}s"
    )


def profile_result(plan: ProfilePlan, o: ProfileOutcome, metrics: dict[str, float], run_id) -> ProfileResult:
    s = o.summary
    return ProfileResult(
        out=plan.out,
        profiles=plan.out / "profiles.parquet",
        embeddings=plan.out / "profile_embeddings.parquet",
        run_fingerprint=plan.run_fp,
        counts=s["counts"],
        metrics=metrics,
        rounds=o.rounds,
        mlflow_run_id=run_id,
        extra={
            **{k: s[k] for k in ("reasons", "embedded_users", "embedding_dim", "reduction")},
            "round_seconds": [r["seconds"] for r in o.stages["rounds"]],
            "stages": o.stages,
            "progress": o.progress,
        },
    )
