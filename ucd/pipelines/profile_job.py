"""The profile job on Ray Data: user histories -> prompts -> LLM -> checks -> embedder -> Parquet.

One pass streams every runnable request through

    RequestBuilder (actor) -> LLM stage (vLLM processor | hf actors | HTTP actors)
      -> output checks -> EmbedBatch (actors) -> driver, which appends shards

A pass is one round of each user's plan (a single prompt; or chunk profiles, then their
merge; or a chain of updates; plus retries of bad answers). Rounds repeat until every user's
final profile is settled, then the shards are compacted into ``profiles.parquet`` and
``profile_embeddings.parquet``. Everything a rerun needs is in the shards, so a killed job
resumes where it stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ucd import schema
from ucd.config import dump_config
from ucd.embed.embedder import EmbedBatch, embed_identity
from ucd.embed.reduce import PCA
from ucd.errors import ConfigError, DataError
from ucd.llm import backends
from ucd.llm.prepare import model_name, resolve_llm_path
from ucd.profiles.checks import FAILED, OK, TRUNCATED, check_table
from ucd.profiles.chunking import Budget
from ucd.profiles.config import ProfileJobConfig, RayConfig
from ucd.profiles.history import Prepared, load_prepared
from ucd.profiles.progress import Progress
from ucd.profiles.prompts import templates
from ucd.profiles.requests import STATE_SCHEMA, Done, RequestBuilder, settled
from ucd.profiles.store import ShardStore, ShardWriter
from ucd.tracking import runs as tracking

# Light stages must not hold a whole CPU: on a 2-core machine the vLLM replica and the
# embedder already reserve most of it, and a stage that cannot be scheduled stalls the stream.
_LIGHT_CPU = 0.1


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


def ensure_ray(cfg: RayConfig, log: Callable[[str], None] = print) -> bool:
    """Connect to ``ray.address`` / $RAY_ADDRESS (jobs), else start a local instance.

    Returns True when this call started Ray (the caller then shuts it down).
    """
    import ray

    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
        log(f"[profile] connected to Ray at {address}")
        return True
    ray.init(
        num_cpus=cfg.num_cpus,
        object_store_memory=cfg.object_store_memory,
        include_dashboard=cfg.include_dashboard,
        log_to_driver=True,
    )
    log("[profile] started a local Ray instance")
    return True


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


def _done_map(latest: pa.Table) -> dict[int, dict[str, Done]]:
    out: dict[int, dict[str, Done]] = {}
    cols = [latest.column(c).to_pylist() for c in ("user_id", "key", "attempt", "status", "text")]
    for u, k, a, s, t in zip(*cols, strict=True):
        out.setdefault(u, {})[k] = Done(a, s, t or "")
    return out


def _state_table(users: pa.Table, done: dict[int, dict[str, Done]], pending: list[int]) -> pa.Table:
    idx = {u: i for i, u in enumerate(users.column("user_id").to_pylist())}
    rows = [idx[u] for u in pending]
    sub = users.take(pa.array(rows, pa.int64()))
    dk, da, ds_, dt_ = [], [], [], []
    for u in pending:
        d = done.get(u, {})
        dk.append(list(d))
        da.append([x.attempt for x in d.values()])
        ds_.append([x.status for x in d.values()])
        dt_.append([x.text for x in d.values()])
    return pa.table(
        [sub.column("user_id"), sub.column("history"), sub.column("history_rating"), dk, da, ds_, dt_],
        schema=STATE_SCHEMA,
    )


def _embed_stage(ds, e, statuses, pool_size: int, batch_size: int | None):
    """Ray Data actor pool of :class:`EmbedBatch` over ``ds`` (pyarrow batches)."""
    import ray

    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs=dict(
            model=e.model,
            prefix=e.prefix,
            device=e.device,
            batch_size=e.batch_size,
            max_seq_length=e.max_seq_length,
            statuses=list(statuses),
        ),
        compute=ray.data.ActorPoolStrategy(size=pool_size),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=e.num_cpus,
        num_gpus=e.num_gpus,
    )


def _llm_stage(ds, cfg: ProfileJobConfig, model_path: str, eos_ids: set[int], generator: type | None = None):
    import ray

    llm = cfg.llm
    if generator is not None:
        return ds.map_batches(
            generator,
            compute=ray.data.ActorPoolStrategy(size=1),
            batch_size=llm.batch_size,
            batch_format="pyarrow",
            num_cpus=_LIGHT_CPU,
        )
    if llm.backend == "vllm":
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        proc = build_processor(
            vLLMEngineProcessorConfig(**backends.vllm_processor_kwargs(llm, model_path)),
            preprocess=backends.VLLMPre(cfg.sampling),
            postprocess=backends.VLLMPost(eos_ids, cfg.sampling.max_tokens),
            preprocess_map_kwargs={"num_cpus": _LIGHT_CPU},
            postprocess_map_kwargs={"num_cpus": _LIGHT_CPU},
        )
        return proc(ds).map_batches(backends.normalize_results, batch_format="pyarrow", num_cpus=_LIGHT_CPU)
    env = {"env_vars": backends.resolve_env(llm.env)}
    if llm.backend == "hf":
        return ds.map_batches(
            backends.HFGenerator,
            fn_constructor_kwargs=dict(
                model_path=model_path,
                sampling=cfg.sampling,
                eos_ids=eos_ids,
                dtype=llm.hf_dtype,
                device=llm.hf_device,
                threads=llm.hf_threads,
            ),
            compute=ray.data.ActorPoolStrategy(size=llm.concurrency),
            batch_size=llm.batch_size,
            batch_format="pyarrow",
            num_cpus=llm.num_cpus,
            num_gpus=llm.num_gpus,
            runtime_env=env,
        )
    return ds.map_batches(
        backends.OpenAIGenerator,
        fn_constructor_kwargs=dict(cfg=llm, sampling=cfg.sampling),
        compute=ray.data.ActorPoolStrategy(size=llm.concurrency),
        batch_size=llm.batch_size,
        batch_format="pyarrow",
        num_cpus=_LIGHT_CPU,
        runtime_env=env,
    )


def _run_round(
    ctx: _Ctx, state: pa.Table, progress: Progress, writer: ShardWriter
) -> tuple[int, float | None]:
    """One streaming pass; returns the result rows written and the seconds to the first result.

    The first result waits for every actor of the round (request builder, LLM engine, embedder)
    to start and for the first batches in flight to be generated: start-up cost plus one batch's
    latency, reported apart from the round's total.
    """
    import ray

    t0 = time.monotonic()
    cfg = ctx.cfg
    step = max(1, cfg.llm.batch_size)
    blocks = [state.slice(i, step) for i in range(0, state.num_rows, step)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(
        RequestBuilder,
        fn_constructor_kwargs=dict(
            tokenizer_path=ctx.tokenizer_path,
            item_text=ctx.prepared.item_text,
            tpl=ctx.tpl,
            budget=ctx.budget,
            sampling=cfg.sampling,
            checks=cfg.checks,
            field_chars=cfg.prompt.field_chars,
            max_items=cfg.prompt.max_items,
            system_role=cfg.prompt.system_role,
            list_items=cfg.prompt.list_items,
        ),
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=step,
        batch_format="pyarrow",
        num_cpus=_LIGHT_CPU,
    )
    ds = _llm_stage(ds, cfg, ctx.model_path, ctx.eos_ids, ctx.generator)
    ds = ds.map_batches(
        check_table, fn_kwargs={"cfg": cfg.checks}, batch_format="pyarrow", num_cpus=_LIGHT_CPU
    )
    # Whole blocks as they come: bundling rows up to a batch size would hold results back from
    # the shards (Ray Data insists on an integer when GPUs are requested).
    e = cfg.embed
    ds = _embed_stage(ds, e, e.statuses, e.concurrency, e.batch_size if e.num_gpus > 0 else None)
    return _drain(
        ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0),
        writer,
        progress,
        cfg.checks.retries,
        t0,
    )


def _drain(
    batches: Iterable[pa.Table], writer: ShardWriter, progress: Progress, retries: int, t0: float
) -> tuple[int, float | None]:
    """Hands each result batch to the shard writer; returns the rows and the seconds to the first.

    The writer buffers up to ``shard_rows`` rows: whatever ends the stream (the last batch, an
    interrupt, a failed stage), the answers already received reach a shard, so a resume does not
    ask the LLM for them again.
    """
    n = 0
    first: float | None = None
    try:
        for batch in batches:
            if first is None:
                first = round(time.monotonic() - t0, 2)
            writer.add(batch)
            n += batch.num_rows
            keys = batch.column("key").to_pylist()
            status = batch.column("status").to_pylist()
            attempt = batch.column("attempt").to_pylist()
            finished = sum(
                1
                for k, s, a in zip(keys, status, attempt, strict=True)
                if k == "final" and settled(Done(a, s, ""), retries)
            )
            progress.update(
                finished,
                sum(1 for k in keys if k == "final"),
                batch.num_rows,
                int(pc.sum(batch.column("prompt_tokens")).as_py() or 0),
                int(pc.sum(batch.column("output_tokens")).as_py() or 0),
            )
    finally:
        writer.flush()
    return n, first


@dataclass
class _Ctx:
    cfg: ProfileJobConfig
    prepared: Prepared
    tpl: Any
    budget: Budget
    model_path: str
    tokenizer_path: str
    eos_ids: set[int]
    generator: type | None = None


def _embed_missing(finals: pa.Table, cfg: ProfileJobConfig, identity: str) -> pa.Table:
    """Vectors for final rows stored under another embedder config (or none yet)."""
    import ray

    statuses = set(cfg.embed.statuses)
    need = [
        i
        for i, (s, m) in enumerate(
            zip(finals.column("status").to_pylist(), finals.column("embed_model").to_pylist(), strict=True)
        )
        if s in statuses and m != identity
    ]
    if not need:
        return finals
    sub = finals.take(pa.array(need, pa.int64())).drop_columns(["embedding", "embed_model"])
    e = cfg.embed
    ds = _embed_stage(ray.data.from_arrow(sub), e, statuses, 1, e.batch_size)
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


def _assemble(ctx: _Ctx, store: ShardStore, users: list[int], out: Path, run_fp: str, log) -> dict[str, Any]:
    cfg, prepared = ctx.cfg, ctx.prepared
    selected = pa.array(users, pa.int32())
    latest = store.latest()
    latest = latest.filter(pc.is_in(latest.column("user_id"), value_set=selected))
    n_attempts = {
        u: a + 1
        for u, k, a in zip(
            *(latest.column(c).to_pylist() for c in ("user_id", "key", "attempt")), strict=True
        )
        if k == "final"
    }
    best = store.best()
    best = best.filter(pc.is_in(best.column("user_id"), value_set=selected))
    # The profile is the best final answer; chunk profiles feeding it are their last attempts.
    chosen = pa.concat_tables(
        [
            latest.filter(pc.not_equal(latest.column("key"), "final")),
            best.filter(pc.equal(best.column("key"), "final")),
        ]
    )
    # Tokens that went into each profile (all its chunk/merge requests).
    tok = chosen.group_by("user_id").aggregate([("prompt_tokens", "sum"), ("output_tokens", "sum")])
    tok_map = {
        u: (p, o)
        for u, p, o in zip(
            *(tok.column(c).to_pylist() for c in ("user_id", "prompt_tokens_sum", "output_tokens_sum")),
            strict=True,
        )
    }
    finals = best.filter(pc.equal(best.column("key"), "final")).sort_by("user_id")
    got = finals.column("user_id").to_pylist()
    if sorted(got) != sorted(users) or len(set(got)) != len(got):
        raise RuntimeError(
            f"internal: {len(users)} users selected but {len(got)} final rows ({len(set(got))} distinct)"
        )
    identity = embed_identity(cfg.embed.model, cfg.embed.prefix, cfg.embed.max_seq_length)
    finals = _embed_missing(finals, cfg, identity)

    model = model_name(cfg.llm.model)
    n = finals.num_rows
    profiles = pa.table(
        {
            "user_id": finals.column("user_id"),
            "profile": finals.column("text"),
            "status": finals.column("status"),
            "n_history": finals.column("n_history"),
            "prompt_tokens": pa.array([tok_map[u][0] for u in got], pa.int32()),
            "output_tokens": pa.array([tok_map[u][1] for u in got], pa.int32()),
            "model": pa.array([model] * n, pa.string()),
            "prompt_version": pa.array([ctx.tpl.version] * n, pa.string()),
            "created_at": finals.column("created_at"),
            "reason": finals.column("reason"),
            "attempts": pa.array([n_attempts[u] for u in got], pa.int32()),
        }
    )
    meta = {
        "dataset": prepared.dataset,
        "fingerprint": run_fp,
        "data_fingerprint": prepared.fingerprint,
        "domain": ctx.tpl.domain,
        "model": model,
        "prompt_version": ctx.tpl.version,
        "backend": cfg.llm.backend,
    }
    schema.write_table(profiles, out / "profiles.parquet", "profiles", meta, schema=schema.PROFILES)

    has_vec = [i for i, v in enumerate(finals.column("embedding").to_pylist()) if v is not None]
    vec_users = [got[i] for i in has_vec]
    vecs = np.asarray([finals.column("embedding")[i].as_py() for i in has_vec], dtype=np.float32)
    reduction: dict[str, Any] = {"method": "none"}
    if cfg.embed.reduce.method == "pca" and len(vec_users) >= 2:
        # Training users only: under temporal, users without a valid/test row; under loo every
        # user is a training user (the profiles saw only training items either way).
        fit_ids = [u for u in vec_users if u not in prepared.eval_users] or vec_users
        fit_rows = [i for i, u in enumerate(vec_users) if u in set(fit_ids)]
        pca = PCA.fit(vecs[fit_rows], cfg.embed.reduce.dim, cfg.embed.reduce.renormalize)
        vecs = pca.transform(vecs)
        pca.save(out / "reduction.npz", fit_ids)
        reduction = {
            "method": "pca",
            "dim": int(vecs.shape[1]),
            "fitted_on_users": len(fit_ids),
            "explained_variance": float(pca.explained_variance_ratio.sum()),
        }
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
    schema.write_table(
        emb_table,
        out / "profile_embeddings.parquet",
        "profile_embeddings",
        {
            **meta,
            "embed_model": cfg.embed.model,
            "embed_prefix": cfg.embed.prefix,
            "statuses": list(cfg.embed.statuses),
            "reduction": reduction,
        },
        schema=schema.profile_embeddings_schema(dim),
    )
    status_counts = Counter(finals.column("status").to_pylist())
    reasons = Counter(r for r in finals.column("reason").to_pylist() if r)
    all_rows = store.read()
    all_rows = all_rows.filter(pc.is_in(all_rows.column("user_id"), value_set=pa.array(users, pa.int32())))
    return {
        "counts": {s: int(status_counts.get(s, 0)) for s in (OK, TRUNCATED, FAILED)},
        "reasons": dict(reasons),
        "retried_requests": int(pc.sum(pc.greater(all_rows.column("attempt"), 0)).as_py() or 0),
        "requests": all_rows.num_rows,
        "embedded_users": len(vec_users),
        "embedding_dim": dim,
        "reduction": reduction,
        "finals": finals,
    }


def _sample(finals: pa.Table, k: int) -> list[dict[str, Any]]:
    cols = ["user_id", "status", "reason", "n_history", "attempt", "text"]
    return finals.select(cols).slice(0, k).to_pylist()


def run_profile_job(
    cfg: ProfileJobConfig,
    data: str | Path,
    out: str | Path,
    log: Callable[[str], None] = print,
    generator: type | None = None,
) -> ProfileResult:
    """Profiles (and their vectors) for the training users of a prepared dataset, resumably.

    ``generator`` replaces the configured LLM backend with a Ray Data UDF class (request rows
    in, ``backends.RESULT_SCHEMA`` rows out); tests use it to script bad answers.
    """
    import ray

    t_start = time.monotonic()
    data, out = Path(data), Path(out)
    prepared = load_prepared(data)
    users_t = select_users(prepared, cfg)
    users = users_t.column("user_id").to_pylist()
    domain = prepared.domain if cfg.prompt.domain == "auto" else cfg.prompt.domain
    if domain not in ("movies", "products", "generic"):
        domain = "generic"
    tpl = templates(domain, cfg.prompt.style, cfg.prompt.facts)
    if cfg.llm.backend == "openai" and not cfg.llm.tokenizer:
        raise ConfigError("the openai backend needs llm.tokenizer (a local tokenizer for the prompt budgets)")
    model_path = resolve_llm_path(cfg.llm.model) if cfg.llm.backend != "openai" else cfg.llm.model
    tokenizer_path = resolve_llm_path(cfg.llm.tokenizer) if cfg.llm.tokenizer else model_path
    eos_ids = backends.eos_token_ids(tokenizer_path)
    budget = Budget(
        cfg.llm.max_model_len, cfg.sampling.max_tokens, cfg.chunking.max_chunks, cfg.chunking.mode
    )
    if budget.prompt <= 0:
        raise ConfigError(
            f"llm.max_model_len {cfg.llm.max_model_len} leaves no room for prompts next to sampling.max_tokens"
        )
    run_fp = run_fingerprint(cfg, prepared, tpl.version, tpl.digest())
    store = ShardStore(out / "shards" / run_fp)
    ctx = _Ctx(cfg, prepared, tpl, budget, model_path, tokenizer_path, eos_ids, generator)
    out.mkdir(parents=True, exist_ok=True)

    params = {
        "dataset": prepared.dataset,
        "data_fingerprint": prepared.fingerprint,
        "run_fingerprint": run_fp,
        "model": model_name(cfg.llm.model),
        "prompt_version": tpl.version,
        "backend": cfg.llm.backend,
        "users": len(users),
        "user_share": cfg.user_share,
        "sampling": cfg.sampling.model_dump(),
        "chunking": cfg.chunking.model_dump(),
        "max_model_len": cfg.llm.max_model_len,
        "embed_model": cfg.embed.model,
        "reduce": cfg.embed.reduce.method,
    }
    started_ray = False
    progress: Progress | None = None
    # Where the wall time goes (start-up costs apart from generation): summary.json "stages".
    stages: dict[str, Any] = {"setup_s": round(time.monotonic() - t_start, 2)}
    with tracking.run(cfg.tracking, run_name=f"profile-{prepared.dataset}", params=params) as active:
        try:
            t = time.monotonic()
            started_ray = ensure_ray(cfg.ray, log)
            stages["ray_start_s"] = round(time.monotonic() - t, 2)
            ray.data.DataContext.get_current().enable_progress_bars = False
            retries = cfg.checks.retries
            done = _done_map(store.latest())
            pending = [u for u in users if not settled(done.get(u, {}).get("final"), retries)]
            if cfg.assemble_only:
                users = sorted(set(users) - set(pending))
                if not users:
                    raise DataError(f"assemble_only: no selected user has a settled profile in {out} yet")
                log(f"[profile] assemble_only: {len(users)} settled users, {len(pending)} left unasked")
                pending = []
            progress = Progress(len(users), len(users) - len(pending), out / "progress.json", log)
            log(
                f"[profile] {prepared.dataset}: {len(users)} users, {len(users) - len(pending)} already done "
                f"(run {run_fp}), model {model_name(cfg.llm.model)} via {cfg.llm.backend}, prompts {tpl.version}"
            )
            writer = ShardWriter(store, cfg.shard_rows, cfg.flush_seconds)
            max_rounds = (cfg.chunking.max_chunks + 1) * (retries + 1) + 2
            rounds = 0
            stages["rounds"] = []
            while pending:
                if rounds >= max_rounds:
                    raise RuntimeError(f"internal: {len(pending)} users still pending after {rounds} rounds")
                t_round = time.monotonic()
                progress.start_round(len(pending))
                rows, first = _run_round(ctx, _state_table(users_t, done, pending), progress, writer)
                rounds += 1
                stages["rounds"].append(
                    {"seconds": round(time.monotonic() - t_round, 2), "first_result_s": first}
                )
                done = _done_map(store.latest())
                pending = [u for u in users if not settled(done.get(u, {}).get("final"), retries)]
                log(
                    f"[profile] round {rounds}: {rows} results in {time.monotonic() - t_round:.1f}s, {len(pending)} users pending"
                )
                progress.report()
            t = time.monotonic()
            summary = _assemble(ctx, store, users, out, run_fp, log)
            stages["assemble_s"] = round(time.monotonic() - t, 2)
        except (KeyboardInterrupt, SystemExit):
            # Ctrl-C, or SIGTERM (`ray job stop`, a pre-emption), which the Ray driver's handler
            # turns into SystemExit; either unwinds through _drain's flush first.
            if progress is not None:
                # progress.json's request count then matches what reached the shards.
                progress.report()
                log(
                    f"[profile] interrupted: {progress.requests} results of this run are in {store.folder}; "
                    "the same command resumes from them"
                )
            raise
        finally:
            t = time.monotonic()
            if started_ray:
                ray.shutdown()
            stages["ray_shutdown_s"] = round(time.monotonic() - t, 2)
        finals = summary.pop("finals")
        snap = progress.snapshot()
        wall = time.monotonic() - t_start
        metrics = {
            "wall_s": round(wall, 2),
            "rounds": rounds,
            "users_per_s": snap["users_per_s"],
            "prompt_tokens_per_s": snap["prompt_tokens_per_s"],
            "output_tokens_per_s": snap["output_tokens_per_s"],
            "requests": summary["requests"],
            "retried_requests": summary["retried_requests"],
            **{f"n_{k}": v for k, v in summary["counts"].items()},
            "flagged_share": round(
                (summary["counts"][FAILED] + summary["counts"][TRUNCATED]) / max(len(users), 1), 4
            ),
            "ray_start_s": stages["ray_start_s"],
            "assemble_s": stages["assemble_s"],
            **({"first_result_s": stages["rounds"][0]["first_result_s"] or 0.0} if stages["rounds"] else {}),
        }
        record = {
            "run_fingerprint": run_fp,
            "dataset": prepared.dataset,
            "users": len(users),
            "user_share": cfg.user_share,
            "model": model_name(cfg.llm.model),
            "prompt_version": tpl.version,
            "backend": cfg.llm.backend,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            **{k: v for k, v in summary.items()},
            "metrics": metrics,
            "stages": stages,
            "config": dump_config(cfg),
        }
        (out / "summary.json").write_text(json.dumps(record, indent=2, default=str))
        (out / "sample_profiles.json").write_text(
            json.dumps(_sample(finals, cfg.sample_size), indent=2, default=str)
        )
        run_id = None
        if active is not None:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            mlflow.log_artifact(str(out / "sample_profiles.json"))
            mlflow.log_artifact(str(out / "summary.json"))
            run_id = active.info.run_id
        c = summary["counts"]
        log(
            f"[profile] done: {len(users)} users in {wall:.1f}s over {rounds} round(s) | ok {c[OK]} | "
            f"truncated {c[TRUNCATED]} | failed {c[FAILED]} | retried requests {summary['retried_requests']} | "
            f"-> {out / 'profiles.parquet'}"
        )
        log(
            f"[profile] time: setup {stages['setup_s']}s, ray start {stages['ray_start_s']}s, rounds "
            + ", ".join(
                f"{r['seconds']}s (first result after {r['first_result_s']}s)" for r in stages["rounds"]
            )
            + f", assemble {stages['assemble_s']}s"
        )
    return ProfileResult(
        out=out,
        profiles=out / "profiles.parquet",
        embeddings=out / "profile_embeddings.parquet",
        run_fingerprint=run_fp,
        counts=summary["counts"],
        metrics=metrics,
        rounds=rounds,
        mlflow_run_id=run_id,
        extra={
            **{k: summary[k] for k in ("reasons", "embedded_users", "embedding_dim", "reduction")},
            "round_seconds": [r["seconds"] for r in stages["rounds"]],
            "stages": stages,
            "progress": snap,
        },
    )
