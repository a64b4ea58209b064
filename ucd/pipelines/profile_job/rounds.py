"""The profile job's rounds: each one a Ray Data pass over the users whose profile is unsettled.

    RequestBuilder (actor) -> LLMClient (to the job's LLM replicas)
      -> output checks -> EmbedBatch (actors) -> driver, which appends shards

A pass is one round of each user's plan (a single prompt; or chunk profiles, then their merge;
or a chain of updates; plus retries of bad answers). Rounds repeat until every user's final
profile is settled; the LLM replicas serve them all (llm_replicas.py). Everything a rerun needs
is in the shards, so a killed job resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ucd.pipelines.profile_job.llm_replicas import (
    REPLICA_COLUMN,
    LLMReplicas,
    llm_stage,
    start_llm_replicas,
    stop_llm_replicas,
)
from ucd.pipelines.profile_job.plan import ProfilePlan
from ucd.pipelines.profile_job.ray_stages import check_stage, embed_stage, request_stage
from ucd.profiles.checks import OK
from ucd.profiles.progress import Progress
from ucd.profiles.requests import STATE_SCHEMA, Done, settled
from ucd.profiles.store import ShardStore, ShardWriter


def done_map(latest: pa.Table) -> dict[int, dict[str, Done]]:
    """Per user and request key, the latest stored attempt."""
    out: dict[int, dict[str, Done]] = {}
    cols = [latest.column(c).to_pylist() for c in ("user_id", "key", "attempt", "status", "text")]
    for u, k, a, s, t in zip(*cols, strict=True):
        out.setdefault(u, {})[k] = Done(a, s, t or "")
    return out


def pending_users(store: ShardStore, users: list[int], retries: int) -> tuple[list[int], dict]:
    """The users whose final profile is not settled yet, and what is stored per user."""
    done = done_map(store.latest())
    return [u for u in users if not settled(done.get(u, {}).get("final"), retries)], done


def round_state(users: pa.Table, done: dict[int, dict[str, Done]], pending: list[int]) -> pa.Table:
    """The round's input: each pending user's history and stored results."""
    idx = {u: i for i, u in enumerate(users.column("user_id").to_pylist())}
    sub = users.take(pa.array([idx[u] for u in pending], pa.int64()))
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


def drain_profile_results(
    batches: Iterable[pa.Table],
    writer: ShardWriter,
    progress: Progress,
    retries: int,
    t0: float,
    answered_by: set[str] | None = None,
) -> tuple[int, float | None]:
    """Hands each result batch to the shard writer; returns the rows and the seconds to the first.

    The writer buffers up to ``shard_rows`` rows: whatever ends the stream (the last batch, an
    interrupt, a failed stage), the answers already received reach a shard, so a resume does not
    ask the LLM for them again. ``answered_by`` collects the LLM replicas that answered.
    """
    n = 0
    first: float | None = None
    try:
        for batch in batches:
            if first is None:
                first = round(time.monotonic() - t0, 2)
            writer.add(batch)
            n += batch.num_rows
            _count_results(batch, progress, retries)
            if answered_by is not None and REPLICA_COLUMN in batch.column_names:
                answered_by.update(batch.column(REPLICA_COLUMN).to_pylist())
    finally:
        writer.flush()
    return n, first


def _count_results(batch: pa.Table, progress: Progress, retries: int) -> None:
    cols = (batch.column(c).to_pylist() for c in ("key", "status", "attempt"))
    finals = [(s, a) for k, s, a in zip(*cols, strict=True) if k == "final"]
    progress.update(
        sum(1 for s, a in finals if settled(Done(a, s, ""), retries)),
        len(finals),
        batch.num_rows,
        int(pc.sum(batch.column("prompt_tokens")).as_py() or 0),
        int(pc.sum(batch.column("output_tokens")).as_py() or 0),
        users_flagged=sum(1 for s, _ in finals if s != OK),
    )


class ProfileRounds:
    """Runs rounds until every selected user's profile is settled (or the job is stopped)."""

    def __init__(
        self,
        plan: ProfilePlan,
        users: list[int],
        progress: Progress,
        log: Callable[[str], None],
        on_replicas: Callable[[], None] = lambda: None,
    ):
        self.plan, self.users, self.progress, self.log = plan, users, progress, log
        self.on_replicas = on_replicas  # called once the LLM replicas are asked for
        self.writer = ShardWriter(plan.store, plan.cfg.shard_rows, plan.cfg.flush_seconds)
        self.retries = plan.cfg.checks.retries
        self.seconds: list[dict[str, Any]] = []  # per round: seconds, first_result_s
        self.answered_by: set[str] = set()
        self.replicas_started: list[dict[str, Any]] = []
        self.llm_ready_s: float | None = None

    def run(self, pending: list[int], done: dict) -> int:
        """Returns the number of rounds run; starts the LLM replicas only if a user is pending."""
        if not pending:
            return 0
        cfg = self.plan.cfg
        max_rounds = (cfg.chunking.max_chunks + 1) * (self.retries + 1) + 2
        replicas = start_llm_replicas(self.plan, self.log)
        self.on_replicas()
        try:
            while pending:
                if len(self.seconds) >= max_rounds:
                    raise RuntimeError(
                        f"internal: {len(pending)} users still pending after {max_rounds} rounds"
                    )
                pending, done = self._round(pending, done, replicas)
        finally:
            self.replicas_started = stop_llm_replicas(replicas)
            self.llm_ready_s = replicas.ready_s
        return len(self.seconds)

    def _round(self, pending: list[int], done: dict, replicas: LLMReplicas):
        t0 = time.monotonic()
        self.progress.start_round(len(pending))
        ds = self._dataset(round_state(self.plan.users_table, done, pending), replicas)
        rows, first = drain_profile_results(
            ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0),
            self.writer,
            self.progress,
            self.retries,
            t0,
            self.answered_by,
        )
        self.seconds.append({"seconds": round(time.monotonic() - t0, 2), "first_result_s": first})
        pending, done = pending_users(self.plan.store, self.users, self.retries)
        self.log(
            f"[profile] round {len(self.seconds)}: {rows} results in {time.monotonic() - t0:.1f}s, "
            f"{len(pending)} users pending"
        )
        self.progress.flush()
        return pending, done

    def _dataset(self, state: pa.Table, replicas: LLMReplicas):
        import ray

        cfg = self.plan.cfg
        step = max(1, cfg.llm.batch_size)
        ds = ray.data.from_arrow([state.slice(i, step) for i in range(0, state.num_rows, step)])
        ds = request_stage(ds, self.plan, step)
        ds = check_stage(llm_stage(ds, replicas, cfg.llm.batch_size), cfg.checks)
        # Whole blocks as they come: bundling rows up to a batch size would hold results back from
        # the shards (Ray Data insists on an integer when GPUs are requested).
        e = cfg.embed
        return embed_stage(ds, e, e.statuses, e.concurrency, e.batch_size if e.num_gpus > 0 else None)
