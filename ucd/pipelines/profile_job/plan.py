"""What a profile job will do, decided before Ray starts: users, prompts, model, run key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ucd import schema
from ucd.errors import ConfigError, DataError
from ucd.llm import backends
from ucd.llm.prepare import model_name, resolve_llm_path
from ucd.profiles.chunking import Budget
from ucd.profiles.config import ProfileJobConfig
from ucd.profiles.history import Prepared, load_prepared
from ucd.profiles.prompts import Templates, templates
from ucd.profiles.store import ShardStore


@dataclass
class ProfilePlan:
    """Everything the rounds, the assembly and the report of one job share."""

    cfg: ProfileJobConfig
    prepared: Prepared
    users_table: pa.Table  # the selected training users: user_id, history, history_rating
    tpl: Templates
    budget: Budget
    model_path: str
    tokenizer_path: str
    eos_ids: set[int]
    run_fp: str
    store: ShardStore
    out: Path
    generator: type | None = None

    @property
    def users(self) -> list[int]:
        return self.users_table.column("user_id").to_pylist()


def plan_profile_job(
    cfg: ProfileJobConfig, data: str | Path, out: str | Path, generator: type | None = None
) -> ProfilePlan:
    """Loads the prepared data and resolves users, prompts, model paths and the run fingerprint."""
    out = Path(out)
    prepared = load_prepared(Path(data))
    users_table = select_users(prepared, cfg)
    domain = prepared.domain if cfg.prompt.domain == "auto" else cfg.prompt.domain
    if domain not in ("movies", "products", "generic"):
        domain = "generic"
    tpl = templates(domain, cfg.prompt.style, cfg.prompt.facts)
    if cfg.llm.backend == "openai" and not cfg.llm.tokenizer:
        raise ConfigError("the openai backend needs llm.tokenizer (a local tokenizer for the prompt budgets)")
    model_path = resolve_llm_path(cfg.llm.model) if cfg.llm.backend != "openai" else cfg.llm.model
    tokenizer_path = resolve_llm_path(cfg.llm.tokenizer) if cfg.llm.tokenizer else model_path
    budget = Budget(
        cfg.llm.max_model_len, cfg.sampling.max_tokens, cfg.chunking.max_chunks, cfg.chunking.mode
    )
    if budget.prompt <= 0:
        raise ConfigError(
            f"llm.max_model_len {cfg.llm.max_model_len} leaves no room for prompts next to sampling.max_tokens"
        )
    run_fp = run_fingerprint(cfg, prepared, tpl.version, tpl.digest())
    out.mkdir(parents=True, exist_ok=True)
    return ProfilePlan(
        cfg=cfg,
        prepared=prepared,
        users_table=users_table,
        tpl=tpl,
        budget=budget,
        model_path=model_path,
        tokenizer_path=tokenizer_path,
        eos_ids=backends.eos_token_ids(tokenizer_path),
        run_fp=run_fp,
        store=ShardStore(out / "shards" / run_fp),
        out=out,
        generator=generator,
    )


def select_users(prepared: Prepared, cfg: ProfileJobConfig) -> pa.Table:
    t = prepared.train
    if cfg.user_ids is not None:
        wanted = pa.array(sorted(set(cfg.user_ids)), pa.int32())
        t = t.filter(pc.is_in(t.column("user_id"), value_set=wanted))
        missing = set(cfg.user_ids) - set(t.column("user_id").to_pylist())
        if missing:
            raise DataError(f"user_ids not among the training users: {sorted(missing)[:10]}")
    if cfg.user_share is not None:
        t = t.take(pa.array(share_rows(t.num_rows, cfg.user_share, cfg.user_seed), pa.int64()))
    if cfg.limit_users is not None:
        t = t.slice(0, cfg.limit_users)
    if t.num_rows == 0:
        raise DataError(f"{prepared.folder}: no training users selected")
    return t


def share_rows(n: int, share: float, seed: int) -> np.ndarray:
    """Rows of a seeded random ``share`` of ``n`` users, in their original (id) order."""
    k = int(np.ceil(share * n))
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def run_fingerprint(cfg: ProfileJobConfig, prepared: Prepared, tpl_version: str, tpl_digest: str) -> str:
    """What makes a profile: model, prompt version (+ wording), sampling, data. Not the backend.

    Nor ``checks.retries``: it decides how many attempts are made, never what an attempt
    writes, so a job restarted with fewer (or more) retries resumes instead of starting over.
    """
    return schema.fingerprint(
        {
            "model": cfg.llm.model,
            "tokenizer": cfg.llm.tokenizer,
            "dtype": cfg.llm.dtype,
            "ctx": cfg.llm.max_model_len,
        },
        tpl_version,
        tpl_digest,
        cfg.sampling.model_dump(),
        cfg.prompt.model_dump(),
        cfg.chunking.model_dump(),
        cfg.checks.model_dump(exclude={"retries"}),
        prepared.fingerprint,
        prepared.dataset,
    )


def profile_params(plan: ProfilePlan) -> dict[str, Any]:
    """The job's MLflow parameters."""
    cfg = plan.cfg
    return {
        "dataset": plan.prepared.dataset,
        "data_fingerprint": plan.prepared.fingerprint,
        "run_fingerprint": plan.run_fp,
        "model": model_name(cfg.llm.model),
        "prompt_version": plan.tpl.version,
        "backend": cfg.llm.backend,
        "users": plan.users_table.num_rows,
        "user_share": cfg.user_share,
        "sampling": cfg.sampling.model_dump(),
        "chunking": cfg.chunking.model_dump(),
        "max_model_len": cfg.llm.max_model_len,
        "embed_model": cfg.embed.model,
        "reduce": cfg.embed.reduce.method,
    }
