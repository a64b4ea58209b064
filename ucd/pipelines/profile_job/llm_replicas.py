"""The profile job's LLM replicas: started once, before the first round, kept until the job ends.

Each round is a Ray Data pipeline of its own (a round's requests depend on the answers of the
previous one), and an actor stage of Ray Data lives only as long as its pipeline: with the
engine inside the pipeline, every retry (or merge) round started vLLM again, ~20-40 s on an
idle CPU machine and minutes for a large model. The replicas are Ray actors owned by the job
instead; a round reaches them through :class:`LLMClient`, a light stage that hands each batch
to the least busy replica that has started.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ucd.llm import backends
from ucd.pipelines.profile_job.ray_stages import LIGHT_CPU

# Which replica answered: the job reports the distinct ones (summary.json stages.llm).
REPLICA_COLUMN = "llm_replica"


class TableReplica:
    """A backend UDF that maps a request table to a result table (hf, openai, tests' scripts)."""

    def __init__(self, udf: type, kwargs: dict[str, Any]):
        self.udf = udf(**kwargs)

    def generate(self, batch: pa.Table) -> pa.Table:
        return self.udf(batch)

    def close(self) -> None:
        pass


class VLLMReplica:
    """ray.data.llm's vLLM engine UDF, held by a replica instead of one round's actor pool.

    The UDF is asynchronous: it runs on an event loop in a thread of its own, as in Ray Data's
    actor stage, and the replica's threads hand it batches concurrently.
    """

    def __init__(self, udf: type, udf_kwargs: dict[str, Any], data_column: str, sampling, eos_ids: set[int]):
        self.udf = udf(**udf_kwargs)
        self.data_column = data_column
        self.pre = backends.VLLMPre(sampling)
        self.post = backends.VLLMPost(eos_ids, sampling.max_tokens)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def generate(self, batch: pa.Table) -> pa.Table:
        rows = [{**r, **self.pre(r)} for r in batch.to_pylist()]
        answered = asyncio.run_coroutine_threadsafe(self._answer(rows), self.loop).result()
        return backends.vllm_results(answered, self.post)

    async def _answer(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async for part in self.udf({self.data_column: rows}):
            out.extend(part.get(self.data_column, []))
        return out

    def close(self) -> None:
        engine = getattr(self.udf, "llm", None)
        if engine is not None:
            engine.shutdown()


class LLMHost:
    """One replica as a Ray actor; its resources and threads are set by :func:`start_llm_replicas`."""

    def __init__(self, replica: type, kwargs: dict[str, Any]):
        t0 = time.monotonic()
        self.replica = replica(**kwargs)
        self.start_s = round(time.monotonic() - t0, 2)
        # A restarted actor is another process, hence another id: each id is one engine start.
        self.id = f"{socket.gethostname()}:{os.getpid()}"

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "start_s": self.start_s}

    def generate(self, batch: pa.Table) -> pa.Table:
        out = self.replica.generate(batch)
        return out.append_column(REPLICA_COLUMN, pa.array([self.id] * out.num_rows, pa.string()))

    def close(self) -> None:
        self.replica.close()


@dataclass
class ReplicaSpec:
    replica: type
    kwargs: dict[str, Any]
    options: dict[str, Any]  # Ray actor options of each replica
    count: int
    need: dict[str, float]  # CPU / GPU per replica
    placement: Callable[[], dict[str, Any]] | None = None  # per replica (tensor parallel)


def llm_replica_spec(plan) -> ReplicaSpec:
    """The configured backend (or the test's ``generator``) as replicas."""
    cfg, llm = plan.cfg, plan.cfg.llm
    env = {"env_vars": backends.resolve_env(llm.env)}
    if plan.generator is not None:
        kw = {"udf": plan.generator, "kwargs": {}}
        return ReplicaSpec(TableReplica, kw, {"num_cpus": LIGHT_CPU}, 1, {"CPU": LIGHT_CPU})
    if llm.backend == "vllm":
        return _vllm_spec(plan)
    if llm.backend == "hf":
        hf = dict(
            model_path=plan.model_path,
            sampling=cfg.sampling,
            eos_ids=plan.eos_ids,
            dtype=llm.hf_dtype,
            device=llm.hf_device,
            threads=llm.hf_threads,
        )
        need = {"CPU": llm.num_cpus, "GPU": llm.num_gpus}
        options = {"num_cpus": llm.num_cpus, "num_gpus": llm.num_gpus, "runtime_env": env}
        return ReplicaSpec(
            TableReplica, {"udf": backends.HFGenerator, "kwargs": hf}, options, llm.concurrency, need
        )
    kw = {"udf": backends.OpenAIGenerator, "kwargs": {"cfg": llm, "sampling": cfg.sampling}}
    options = {"num_cpus": LIGHT_CPU, "runtime_env": env}
    return ReplicaSpec(TableReplica, kw, options, llm.concurrency, {"CPU": LIGHT_CPU})


def _vllm_spec(plan) -> ReplicaSpec:
    """ray.data.llm builds the engine stage (placement, runtime env, engine arguments) from
    the same config as before; its UDF and actor options are reused for the replicas."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    llm = plan.cfg.llm
    proc = build_processor(vLLMEngineProcessorConfig(**backends.vllm_processor_kwargs(llm, plan.model_path)))
    stage = proc.get_stage_by_name("vLLMEngineStage")
    kw = stage.get_dataset_map_batches_kwargs(batch_size=llm.batch_size, data_column=proc.DATA_COLUMN)
    keys = ("num_cpus", "num_gpus", "resources", "accelerator_type", "runtime_env", "max_concurrency")
    options = {k: kw[k] for k in keys if kw.get(k) is not None}
    replica = dict(
        udf=stage.fn,
        udf_kwargs=kw["fn_constructor_kwargs"],
        data_column=proc.DATA_COLUMN,
        sampling=plan.cfg.sampling,
        eos_ids=plan.eos_ids,
    )
    tp = llm.tensor_parallel_size
    need = {"CPU": llm.num_cpus * tp, "GPU": llm.num_gpus * tp}
    return ReplicaSpec(VLLMReplica, replica, options, llm.concurrency, need, kw.get("ray_remote_args_fn"))


def replicas_that_fit(spec: ReplicaSpec, cfg, total: dict[str, float]) -> int:
    """Replicas (at most ``spec.count``, at least 1) that fit in a cluster of ``total``
    resources next to the embedder and the light stages: Ray Data's pools scale to what is
    left, and fixed replicas taking every GPU would leave the embedder waiting forever."""
    e = cfg.embed
    rest = {"CPU": e.num_cpus * e.concurrency + 4 * LIGHT_CPU, "GPU": e.num_gpus * e.concurrency}
    n = spec.count
    for res, per in spec.need.items():
        if per > 0:
            n = min(n, int((total.get(res, 0.0) - rest.get(res, 0.0)) // per))
    return max(1, n)


@dataclass
class LLMReplicas:
    hosts: list
    names: list[str]
    described: list  # ObjectRefs of each host's describe(): ready once its engine has started
    concurrency: int  # batches in flight over all replicas
    need: dict[str, float]  # CPU / GPU per replica
    placement_groups: list = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    ready_s: float | None = None  # seconds from the request to the first replica up
    stopped: threading.Event = field(default_factory=threading.Event)


def start_llm_replicas(plan, log: Callable[[str], None]) -> LLMReplicas:
    """Starts the replicas (their engines load in the background while the first round starts)."""
    import ray

    spec = llm_replica_spec(plan)
    n = replicas_that_fit(spec, plan.cfg, ray.cluster_resources())
    if n < spec.count:
        log(f"[profile] {n} of {spec.count} LLM replicas fit next to the embedder in this cluster")
    host = ray.remote(LLMHost)
    # Named, so that a round's client finds them by name: handles among its constructor
    # arguments made Ray's core print a warning on the console for every round.
    names = [f"ucd-profile-llm-{uuid.uuid4().hex[:12]}-{i}" for i in range(n)]
    hosts, groups = [], []
    for name in names:
        extra = spec.placement() if spec.placement is not None else {}
        group = getattr(extra.get("scheduling_strategy"), "placement_group", None)
        if group is not None:
            groups.append(group)
        options = {**spec.options, **extra, "name": name, "max_restarts": -1, "max_task_retries": -1}
        hosts.append(host.options(**options).remote(spec.replica, spec.kwargs))
    per_host = spec.options.get("max_concurrency", 1)
    described = [h.describe.remote() for h in hosts]
    replicas = LLMReplicas(hosts, names, described, per_host * n, spec.need, groups)
    threading.Thread(target=_watch_start, args=(replicas, log), daemon=True).start()
    return replicas


def _watch_start(replicas: LLMReplicas, log: Callable[[str], None], patience_s: float = 120.0) -> None:
    """Says when the first engine is up (minutes for a large model), or, once, that none could
    start yet for lack of resources: a Ray actor waiting for them is otherwise silent."""
    import ray

    warned = False
    while not replicas.stopped.is_set():
        try:
            ready, _ = ray.wait(replicas.described, num_returns=1, timeout=5)
            if ready:
                ray.get(ready[0])
        except Exception:  # noqa: BLE001  (failed to start, or Ray is down: the round reports it)
            return
        waited = time.monotonic() - replicas.t0
        if ready and not replicas.stopped.is_set():
            replicas.ready_s = round(waited, 2)
            log(f"[profile] LLM engine up after {waited:.0f}s ({len(replicas.hosts)} replica(s))")
        if ready:
            return
        if not warned and waited > patience_s:
            warned = True
            free = {k: v for k, v in ray.available_resources().items() if k in replicas.need}
            log(
                f"[profile] warning: no LLM replica has started after {waited:.0f}s; each needs "
                f"{replicas.need}, the cluster has {free} free"
            )


def stop_llm_replicas(replicas: LLMReplicas) -> list[dict[str, Any]]:
    """Shuts the engines down; returns the description (id, start seconds) of each that started."""
    import ray

    replicas.stopped.set()
    ready, _ = ray.wait(replicas.described, num_returns=len(replicas.described), timeout=0)
    started = []
    for ref in ready:
        try:
            started.append(ray.get(ref))
        except Exception:  # noqa: BLE001  (a replica that failed to start has nothing to close)
            continue
    try:
        # An engine busy with a batch (the job was interrupted) is killed after this wait.
        ray.wait([h.close.remote() for h in replicas.hosts], num_returns=len(replicas.hosts), timeout=10)
    finally:
        for h in replicas.hosts:
            ray.kill(h)
        for group in replicas.placement_groups:
            ray.util.remove_placement_group(group)
    return started


class LLMClient:
    """Ray Data stage of a round: each batch goes to the least busy replica that has started."""

    def __init__(self, names: list[str]):
        import ray

        self.hosts = [ray.get_actor(n) for n in names]
        self.waiting = {h.describe.remote(): i for i, h in enumerate(self.hosts)}
        self.ready: list[int] = []
        self.busy = [0] * len(self.hosts)
        self.lock = threading.Lock()

    def _pick(self) -> int:
        import ray

        with self.lock:
            if self.waiting:
                refs = list(self.waiting)
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                if not done and not self.ready:
                    done, _ = ray.wait(refs, num_returns=1)
                for ref in done:
                    ray.get(ref)  # raises if the replica failed to start
                    self.ready.append(self.waiting.pop(ref))
            i = min(self.ready, key=lambda j: self.busy[j])
            self.busy[i] += 1
            return i

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        i = self._pick()
        try:
            return ray.get(self.hosts[i].generate.remote(batch))
        finally:
            with self.lock:
                self.busy[i] -= 1


def llm_stage(ds, replicas: LLMReplicas, batch_size: int):
    """The round's requests through the job's replicas."""
    import ray

    k = max(1, replicas.concurrency)
    return ds.map_batches(
        LLMClient,
        fn_constructor_kwargs={"names": replicas.names},
        compute=ray.data.ActorPoolStrategy(
            size=1,
            max_tasks_in_flight_per_actor=k,
            max_concurrent_calls_per_actor=k,
            enable_true_multi_threading=True,
        ),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=LIGHT_CPU,
    )
