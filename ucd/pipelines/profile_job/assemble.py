"""The profile job's outputs from its shards: ``profiles.parquet`` and ``profile_embeddings.parquet``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ucd import schema
from ucd.embed.embedder import embed_identity
from ucd.embed.reduce import PCA
from ucd.llm.prepare import model_name
from ucd.pipelines.profile_job.plan import ProfilePlan
from ucd.pipelines.profile_job.ray_stages import embed_stage
from ucd.profiles.checks import FAILED, OK, TRUNCATED
from ucd.profiles.config import ProfileJobConfig


def _of_users(t: pa.Table, users: list[int]) -> pa.Table:
    return t.filter(pc.is_in(t.column("user_id"), value_set=pa.array(users, pa.int32())))


def assemble_profiles(plan: ProfilePlan, users: list[int], log: Callable[[str], None]) -> dict[str, Any]:
    """Writes both outputs for ``users`` (all settled); returns the counts for the summary."""
    cfg = plan.cfg
    latest = _of_users(plan.store.latest(), users)
    best = _of_users(plan.store.best(), users)
    finals = best.filter(pc.equal(best.column("key"), "final")).sort_by("user_id")
    got = finals.column("user_id").to_pylist()
    if sorted(got) != sorted(users) or len(set(got)) != len(got):
        raise RuntimeError(
            f"internal: {len(users)} users selected but {len(got)} final rows ({len(set(got))} distinct)"
        )
    identity = embed_identity(cfg.embed.model, cfg.embed.prefix, cfg.embed.max_seq_length)
    finals = _embed_missing(finals, cfg, identity)
    meta = {
        "dataset": plan.prepared.dataset,
        "fingerprint": plan.run_fp,
        "data_fingerprint": plan.prepared.fingerprint,
        "domain": plan.tpl.domain,
        "model": model_name(cfg.llm.model),
        "prompt_version": plan.tpl.version,
        "backend": cfg.llm.backend,
    }
    profiles = _profiles_table(plan, finals, latest, best)
    schema.write_table(profiles, plan.out / "profiles.parquet", "profiles", meta, schema=schema.PROFILES)
    embedded = _write_embeddings(plan, finals, meta, log)
    status_counts = Counter(finals.column("status").to_pylist())
    requests = _of_users(plan.store.read(), users)
    return {
        "counts": {s: int(status_counts.get(s, 0)) for s in (OK, TRUNCATED, FAILED)},
        "reasons": dict(Counter(r for r in finals.column("reason").to_pylist() if r)),
        "retried_requests": int(pc.sum(pc.greater(requests.column("attempt"), 0)).as_py() or 0),
        "requests": requests.num_rows,
        **embedded,
        "finals": finals,
    }


def _profiles_table(plan: ProfilePlan, finals: pa.Table, latest: pa.Table, best: pa.Table) -> pa.Table:
    """One row per user: the best final answer, its tokens (all its requests) and attempts."""
    n_attempts = {
        u: a + 1
        for u, k, a in zip(
            *(latest.column(c).to_pylist() for c in ("user_id", "key", "attempt")), strict=True
        )
        if k == "final"
    }
    # The profile is the best final answer; chunk profiles feeding it are their last attempts.
    chosen = pa.concat_tables(
        [
            latest.filter(pc.not_equal(latest.column("key"), "final")),
            best.filter(pc.equal(best.column("key"), "final")),
        ]
    )
    tok = chosen.group_by("user_id").aggregate([("prompt_tokens", "sum"), ("output_tokens", "sum")])
    cols = ("user_id", "prompt_tokens_sum", "output_tokens_sum")
    tok_map = {u: (p, o) for u, p, o in zip(*(tok.column(c).to_pylist() for c in cols), strict=True)}
    got = finals.column("user_id").to_pylist()
    n = finals.num_rows
    return pa.table(
        {
            "user_id": finals.column("user_id"),
            "profile": finals.column("text"),
            "status": finals.column("status"),
            "n_history": finals.column("n_history"),
            "prompt_tokens": pa.array([tok_map[u][0] for u in got], pa.int32()),
            "output_tokens": pa.array([tok_map[u][1] for u in got], pa.int32()),
            "model": pa.array([model_name(plan.cfg.llm.model)] * n, pa.string()),
            "prompt_version": pa.array([plan.tpl.version] * n, pa.string()),
            "created_at": finals.column("created_at"),
            "reason": finals.column("reason"),
            "attempts": pa.array([n_attempts[u] for u in got], pa.int32()),
        }
    )


def _write_embeddings(
    plan: ProfilePlan, finals: pa.Table, meta: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    """The vectors of the embedded profiles (PCA-reduced if configured)."""
    cfg = plan.cfg
    got = finals.column("user_id").to_pylist()
    has_vec = [i for i, v in enumerate(finals.column("embedding").to_pylist()) if v is not None]
    vec_users = [got[i] for i in has_vec]
    vecs = np.asarray([finals.column("embedding")[i].as_py() for i in has_vec], dtype=np.float32)
    vecs, reduction = _reduce(plan, vec_users, vecs)
    dim = int(vecs.shape[1]) if len(vec_users) else 0
    if dim == 0:
        log("[profile] no profile passed the checks: profile_embeddings.parquet is empty")
        dim = 1
    emb_table = pa.table(
        {
            "user_id": pa.array(vec_users, pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim)
            if len(vec_users)
            else pa.array([], pa.list_(pa.float32(), dim)),
            "model": pa.array([cfg.embed.model] * len(vec_users), pa.string()),
        }
    )
    emb_meta = {
        **meta,
        "embed_model": cfg.embed.model,
        "embed_prefix": cfg.embed.prefix,
        "statuses": list(cfg.embed.statuses),
        "reduction": reduction,
    }
    path = plan.out / "profile_embeddings.parquet"
    schema.write_table(
        emb_table, path, "profile_embeddings", emb_meta, schema=schema.profile_embeddings_schema(dim)
    )
    return {"embedded_users": len(vec_users), "embedding_dim": dim, "reduction": reduction}


def _reduce(plan: ProfilePlan, vec_users: list[int], vecs: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """PCA fitted on training users (saved as reduction.npz), when configured."""
    r = plan.cfg.embed.reduce
    if r.method != "pca" or len(vec_users) < 2:
        return vecs, {"method": "none"}
    # Training users only: under temporal, users without a valid/test row; under loo every
    # user is a training user (the profiles saw only training items either way).
    fit_ids = [u for u in vec_users if u not in plan.prepared.eval_users] or vec_users
    fit_set = set(fit_ids)
    fit_rows = [i for i, u in enumerate(vec_users) if u in fit_set]
    pca = PCA.fit(vecs[fit_rows], r.dim, r.renormalize)
    vecs = pca.transform(vecs)
    pca.save(plan.out / "reduction.npz", fit_ids)
    return vecs, {
        "method": "pca",
        "dim": int(vecs.shape[1]),
        "fitted_on_users": len(fit_ids),
        "explained_variance": float(pca.explained_variance_ratio.sum()),
    }


def _embed_missing(finals: pa.Table, cfg: ProfileJobConfig, identity: str) -> pa.Table:
    """Vectors for final rows stored under another embedder config (or none yet)."""
    import ray

    statuses = set(cfg.embed.statuses)
    cols = zip(finals.column("status").to_pylist(), finals.column("embed_model").to_pylist(), strict=True)
    need = [i for i, (s, m) in enumerate(cols) if s in statuses and m != identity]
    if not need:
        return finals
    sub = finals.take(pa.array(need, pa.int64())).drop_columns(["embedding", "embed_model"])
    e = cfg.embed
    ds = embed_stage(ray.data.from_arrow(sub), e, statuses, 1, e.batch_size)
    fresh = pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))
    emb = dict(zip(fresh.column("user_id").to_pylist(), fresh.column("embedding").to_pylist(), strict=True))
    vecs = finals.column("embedding").to_pylist()
    models = finals.column("embed_model").to_pylist()
    need_set = set(need)
    for i, u in enumerate(finals.column("user_id").to_pylist()):
        if i in need_set:
            vecs[i], models[i] = emb.get(u), identity
    finals = finals.set_column(
        finals.schema.get_field_index("embedding"), "embedding", pa.array(vecs, pa.list_(pa.float32()))
    )
    return finals.set_column(
        finals.schema.get_field_index("embed_model"), "embed_model", pa.array(models, pa.string())
    )
