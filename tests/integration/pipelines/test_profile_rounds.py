"""The Ray Data profile pipeline: bad-output handling (scripted backend), resume after SIGKILL
or with other retries, answers kept on SIGTERM and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from profile_helpers import smollm2, tiny_prepared

from ucd.errors import DataError
from ucd.llm.backends import RESULT_SCHEMA
from ucd.pipelines.profile_job import run_profile_job, share_rows
from ucd.profiles.config import load_profile_config
from ucd.schema import PROFILES, read_meta, read_table

# The fake backends below live in this test module; workers cannot import it by name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

GOOD = (
    "Preferences:\n- Drama ~60%, comedy ~40%, mostly 1990s films\n"
    "Behavioral Insights:\n- Generous rater, average 4 of 5\nEngagement Trends:\n- Recently more comedies"
)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, object_store_memory=400 * 2**20, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path() -> str:
    return smollm2()


class ScriptedLLM:
    """User 1 loops then recovers, 2 stays empty, 3 hits max_tokens then loops, 4 is fine."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for r in batch.to_pylist():
            u, a = r["user_id"], r["attempt"]
            # Distinct answers per user, so the PCA below has variance to find.
            text, finish = (
                GOOD.replace("Drama ~60%", f"Drama ~{20 * u}%")
                + f"\n- likes {['war', 'noir', 'musicals', 'anime'][u % 4]}",
                "stop",
            )
            if u == 1 and a == 0:
                text = "I like movies.\nI like movies.\nI like movies.\nI like movies.\nI like movies."
            elif u == 2:
                text = "  "
            elif u == 3 and a == 0:
                finish = "length"
            elif u == 3:
                text = "Drama. " * 30
            out.append(
                {k: r[k] for k in ("user_id", "key", "attempt", "seed", "n_history", "prompt_tokens")}
                | {"output_tokens": 40, "text": text, "finish": finish, "error": ""}
            )
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


class CountedLLM(ScriptedLLM):
    """ScriptedLLM that leaves a file in ``starts`` each time it is constructed (in any process)."""

    starts = ""

    def __init__(self):
        (Path(self.starts) / f"{os.getpid()}-{time.monotonic_ns()}").touch()


def test_bad_outputs_flagged_retried_counted_never_dropped(ray_local, model_path, tmp_path):
    import mlflow

    CountedLLM.starts = str(tmp_path / "starts")
    (tmp_path / "starts").mkdir()
    data = tiny_prepared(tmp_path / "data")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_profile_config(
        None,
        [
            f"llm.model={model_path}",
            f"tracking.uri={uri}",
            "tracking.experiment=test-profiles",
            "embed.statuses=[ok, truncated]",
            "embed.reduce.method=pca",
            "embed.reduce.dim=2",
            "llm.batch_size=2",
        ],
    )
    res = run_profile_job(cfg, data, tmp_path / "out", generator=CountedLLM)
    # Two rounds (the retries are a round of their own), one LLM: the retry round reused it.
    assert res.rounds == 2 and len(list((tmp_path / "starts").iterdir())) == 1
    assert len(res.extra["stages"]["llm"]["answered_by"]) == 1

    prof = read_table(res.profiles, "profiles")
    # read_table checked every contract column's type; the contract's columns come first.
    assert prof.column_names[: len(PROFILES)] == PROFILES.names
    by_user = {r["user_id"]: r for r in prof.to_pylist()}
    assert sorted(by_user) == [1, 2, 3, 4]  # nobody dropped
    assert (by_user[1]["status"], by_user[1]["attempts"]) == ("ok", 2)
    assert (by_user[2]["status"], by_user[2]["attempts"], by_user[2]["reason"]) == ("failed", 2, "empty")
    # The looping retry does not replace user 3's usable (truncated) first answer.
    assert (by_user[3]["status"], by_user[3]["attempts"], by_user[3]["reason"]) == (
        "truncated",
        2,
        "hit max_tokens",
    )
    assert "likes anime" in by_user[3]["profile"] and "Drama. Drama." not in by_user[3]["profile"]
    assert (by_user[4]["status"], by_user[4]["attempts"]) == ("ok", 1)
    assert res.counts == {"ok": 2, "truncated": 1, "failed": 1}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # The retry round is reported as its own round: the 3 flagged users, all answered.
    prog = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert (prog["round"], prog["round_users"], prog["round_answered"], prog["users_done"]) == (2, 3, 3, 4)
    assert summary["retried_requests"] == 3 and summary["counts"] == res.counts
    stages = summary["stages"]
    assert [r["first_result_s"] <= r["seconds"] for r in stages["rounds"]] == [True, True]
    assert stages["ray_start_s"] >= 0 and stages["assemble_s"] > 0
    meta = read_meta(res.profiles)
    assert meta["dataset"] == "tiny" and meta["prompt_version"] == "movies-structured-v1"
    assert meta["model"] == model_path and meta["fingerprint"] == res.run_fingerprint

    emb = pq.read_table(res.embeddings)
    assert sorted(emb.column("user_id").to_pylist()) == [1, 3, 4]  # failed user 2 has no vector
    vecs = np.stack(emb.column("embedding").to_numpy(zero_copy_only=False))
    assert vecs.shape == (3, 2) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    z = np.load(tmp_path / "out" / "reduction.npz")
    assert z["components"].shape == (2, 384) and sorted(z["fitted_on"].tolist()) == [1, 3, 4]

    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(res.mlflow_run_id)
    assert run.data.params["prompt_version"] == "movies-structured-v1"
    assert run.data.params["backend"] == "vllm" and run.data.params["sampling.temperature"] == "0.2"
    assert run.data.metrics["n_failed"] == 1 and run.data.metrics["retried_requests"] == 3
    assert "users_per_s" in run.data.metrics and "output_tokens_per_s" in run.data.metrics
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(res.mlflow_run_id)}
    assert "sample_profiles.json" in arts

    # Same inputs and settings again: nothing left to do, same outputs.
    again = run_profile_job(cfg, data, tmp_path / "out", generator=ScriptedLLM)
    assert again.rounds == 0 and again.counts == res.counts


def test_rerun_with_other_retries_resumes_instead_of_starting_over(ray_local, model_path, tmp_path):
    data = tiny_prepared(tmp_path / "data")
    out = tmp_path / "out"
    base = [f"llm.model={model_path}", "tracking.enabled=false", "llm.batch_size=2"]

    def job(retries: int):
        cfg = load_profile_config(None, [*base, f"checks.retries={retries}"])
        return run_profile_job(cfg, data, out, generator=ScriptedLLM)

    first = job(0)
    assert first.rounds == 1 and first.counts == {"ok": 1, "truncated": 1, "failed": 2}

    # More retries on the same folder: the three flagged users get attempt 1, nothing else reruns.
    more = job(1)
    assert more.run_fingerprint == first.run_fingerprint
    assert more.rounds == 1 and more.counts == {"ok": 2, "truncated": 1, "failed": 1}
    shards = pa.concat_tables([pq.read_table(f) for f in out.glob("shards/*/part-*.parquet")])
    ident = sorted(zip(*(shards.column(c).to_pylist() for c in ("user_id", "attempt")), strict=True))
    assert ident == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1), (4, 0)]

    # Fewer retries again: everything is settled already.
    fewer = job(0)
    assert fewer.rounds == 0 and fewer.counts == more.counts


def test_user_share_is_seeded_nested_and_grows_by_resuming(ray_local, model_path, tmp_path):
    for n in (4, 1000, 22363):
        small, large = share_rows(n, 0.05, 7), share_rows(n, 0.25, 7)
        assert len(small) == int(np.ceil(0.05 * n)) and len(large) == int(np.ceil(0.25 * n))
        assert set(small) <= set(large) and np.all(np.diff(large) > 0)
        assert np.array_equal(small, share_rows(n, 0.05, 7))
    assert not np.array_equal(share_rows(1000, 0.05, 7), share_rows(1000, 0.05, 8))
    # Not the first rows: a share of an id-sorted table must not be its oldest users.
    assert share_rows(1000, 0.05, 7).max() > 500

    data = tiny_prepared(tmp_path / "data")
    out = tmp_path / "out"
    base = [f"llm.model={model_path}", "tracking.enabled=false", "llm.batch_size=2", "checks.retries=0"]

    def job(share: float, *extra: str, folder=out):
        cfg = load_profile_config(None, [*base, f"user_share={share}", "user_seed=3", *extra])
        return run_profile_job(cfg, data, folder, generator=ScriptedLLM)

    def profiled() -> list[int]:
        return sorted(read_table(out / "profiles.parquet", PROFILES).column("user_id").to_pylist())

    with pytest.raises(DataError, match="assemble_only: no selected user"):
        job(1.0, "assemble_only=true", folder=tmp_path / "empty")
    half = job(0.5)
    first_users = profiled()
    assert len(first_users) == 2 and half.rounds == 1
    # Stopped early: the whole share assembled from what is settled, nothing more asked.
    early = job(1.0, "assemble_only=true")
    assert early.rounds == 0 and profiled() == first_users
    whole = job(1.0)
    assert whole.run_fingerprint == half.run_fingerprint
    assert profiled() == [1, 2, 3, 4]
    # The two users of the half share were asked once: the larger share resumed.
    shards = pa.concat_tables([pq.read_table(f) for f in out.glob("shards/*/part-*.parquet")])
    asked = sorted(shards.column("user_id").to_pylist())
    assert asked == [1, 2, 3, 4]


# A runner that starts this suite in the background (`cmd &` in a script) hands its children
# SIGINT ignored, and Python then keeps it ignored: restore what a terminal's Ctrl-C meets.
_KILL_SCRIPT = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from ucd.pipelines.profile_job import run_profile_job
from ucd.profiles.config import load_profile_config
cfg = load_profile_config(None, sys.argv[3:])
run_profile_job(cfg, sys.argv[1], sys.argv[2])
"""


def _tiny_job(
    ray_address: str, model_path: str, users: int, shard_rows: int, flush_seconds: float
) -> list[str]:
    """Overrides for a real profile job (SmolLM2 on the hf backend) small enough to stop midway."""
    return [
        f"ray.address={ray_address}",
        f"llm.model={model_path}",
        "llm.backend=hf",
        "llm.batch_size=1",
        "tracking.enabled=false",
        f"limit_users={users}",
        "prompt.max_items=4",
        "sampling.max_tokens=12",
        "checks.min_chars=5",
        "checks.retries=0",
        f"shard_rows={shard_rows}",
        f"flush_seconds={flush_seconds}",
    ]


def _spawn_job(data, out, overrides: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(data), str(out), *overrides],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _signal_when(proc: subprocess.Popen, log, ready, sig: int) -> None:
    """Sends ``sig`` to the running job once ``ready()`` holds (within 240 s), waits for it to
    end, and closes its log."""
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.2)
        assert proc.poll() is None, "the job finished (or died) before it could be stopped"
        assert ready(), "the job was not ready to be stopped before the deadline"
        os.kill(proc.pid, sig)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_sigkill_midway_then_rerun_gives_every_user_once(ray_local, model_path, ml100k_loo, tmp_path):
    out = tmp_path / "out"
    overrides = _tiny_job(ray_local, model_path, users=6, shard_rows=1, flush_seconds=0.1)
    log = open(tmp_path / "killed_run.log", "w")  # noqa: SIM115  (closed after the kill)
    proc = _spawn_job(ml100k_loo, out, overrides, log)
    _signal_when(proc, log, lambda: len(list(out.glob("shards/*/part-*.parquet"))) >= 2, signal.SIGKILL)
    assert not (out / "profiles.parquet").exists()
    before = {p.name for p in out.glob("shards/*/part-*.parquet")}
    assert before

    t_kill = time.monotonic()
    res = run_profile_job(load_profile_config(None, overrides), ml100k_loo, out)
    print(f"rerun took {time.monotonic() - t_kill:.1f}s")
    prof = read_table(res.profiles, "profiles")
    users = prof.column("user_id").to_pylist()
    assert sorted(users) == sorted(set(users)) and len(users) == 6
    assert all(
        p.strip()
        for p, s in zip(prof.column("profile").to_pylist(), prof.column("status").to_pylist(), strict=True)
        if s != "failed"
    )
    shards = pa.concat_tables([pq.read_table(f) for f in out.glob("shards/*/part-*.parquet")])
    ident = list(zip(*(shards.column(c).to_pylist() for c in ("user_id", "key", "attempt")), strict=True))
    assert len(ident) == len(set(ident)), "a request was executed twice"
    assert before <= {p.name for p in out.glob("shards/*/part-*.parquet")}  # killed run's work kept
    assert json.loads((out / "progress.json").read_text())["users_done"] == 6


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_stop_midway_flushes_every_answer_received(ray_local, model_path, ml100k_loo, tmp_path, sig):
    """`ray job stop` sends SIGTERM (the Ray driver raises SystemExit on it), Ctrl-C sends
    SIGINT (KeyboardInterrupt): either way the answers buffered for the next shard must reach disk.

    Shards are sized so that nothing would be written before the stop: every row found on
    disk afterwards was saved by the interrupt path.
    """
    out = tmp_path / "out"
    overrides = _tiny_job(ray_local, model_path, users=200, shard_rows=100000, flush_seconds=3600)
    progress = out / "progress.json"
    log_path = tmp_path / "stopped_run.log"
    log = open(log_path, "w")  # noqa: SIM115  (closed after the stop)
    proc = _spawn_job(ml100k_loo, out, overrides, log)

    def answered() -> bool:
        assert not list(out.glob("shards/*/part-*.parquet")), "shards flushed before the stop"
        return progress.exists() and json.loads(progress.read_text())["requests"] > 0

    _signal_when(proc, log, answered, sig)
    assert proc.returncode != 0
    assert not (out / "profiles.parquet").exists()
    reported = json.loads(progress.read_text())["requests"]
    files = list(out.glob("shards/*/part-*.parquet"))
    assert files, "the answers received before the stop were lost"
    assert pa.concat_tables([pq.read_table(f) for f in files]).num_rows == reported > 0
    assert "interrupted:" in log_path.read_text()


def test_results_received_before_an_interrupt_reach_a_shard(tmp_path):
    from ucd.pipelines.profile_job.rounds import drain_profile_results
    from ucd.profiles.progress import Progress
    from ucd.profiles.store import SHARD_SCHEMA, ShardStore, ShardWriter

    def batch(users: list[int]) -> pa.Table:
        rows = [
            {"user_id": u, "key": "final", "attempt": 0, "status": "ok", "text": GOOD, "prompt_tokens": 9}
            | {"output_tokens": 40, "n_history": 5, "seed": 0, "reason": "", "finish": "stop"}
            for u in users
        ]
        return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)

    def stream():
        yield batch([1, 2])
        yield batch([3])
        raise KeyboardInterrupt

    store = ShardStore(tmp_path / "shards")
    writer = ShardWriter(store, rows=1000, seconds=3600)  # would hold all three rows in memory
    progress = Progress(3, 0, None, lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        drain_profile_results(stream(), writer, progress, retries=0, t0=time.monotonic())
    assert sorted(store.read().column("user_id").to_pylist()) == [1, 2, 3]
    assert progress.requests == 3


def test_progress_file_is_replaced_when_a_round_starts(tmp_path):
    from ucd.profiles.progress import Progress

    path = tmp_path / "progress.json"
    path.write_text(json.dumps({"round": 1, "users_done": 336}))  # a previous run's last state
    lines: list[str] = []
    prog = Progress(943, 336, path, lines.append)
    prog.start_round(607)
    state = json.loads(path.read_text())
    assert (state["round"], state["round_users"], state["round_answered"], state["users_done"]) == (
        1,
        607,
        0,
        336,
    )
    assert lines and "round 1: 0/607 answered" in lines[-1]


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_eta_unknown_until_answers_come_steadily_then_from_their_recent_rate():
    from ucd.profiles.progress import Progress

    clock, lines = FakeClock(), []
    prog = Progress(50, 0, None, lines.append, retries=1, clock=clock)
    prog.start_round(50)
    # The engine takes 130 s to start, then the first user's answer (ok) comes back alone.
    clock.t = 130.0
    prog.update(1, 1, 1, 900, 160)
    # Extrapolating from the job's start would say 49 users x 130 s (1h46m).
    assert (prog.report()["eta_s"], prog.snapshot()["round_eta_s"]) == (None, None)
    assert lines[-1].endswith("overall ETA unknown") and "answered, ETA unknown" in lines[-1]
    # Then 2 answers a second; 8 of the next 40 are flagged (retried in round 2).
    for i in range(20):
        clock.t += 1.0
        flagged = 1 if i % 5 < 2 else 0
        prog.update(2 - flagged, 2, 2, 1800, 320, users_flagged=flagged)
    s = prog.snapshot()
    # 9 users left in this round, each with a 8/41 chance of a retry, plus the 8 retries due.
    assert s["round_eta_s"] == pytest.approx(9 / 2, abs=0.1)
    assert s["eta_s"] == pytest.approx((9 * (1 + 8 / 41) + 8) / 2, abs=0.1)
    prog.report()
    assert lines[-1].endswith("overall ETA 0m09s")
    # The round ends (2 more flagged), and the retry round asks the 10 flagged users only.
    for i in range(9):
        clock.t += 0.5
        prog.update(int(i >= 2), 1, 1, 900, 160, users_flagged=int(i < 2))
    clock.t += 2.0
    prog.start_round(10)
    s = prog.snapshot()
    # Their last attempt: one answer each at the recent pace, however slow the start-up was.
    assert s["round_eta_s"] == s["eta_s"] == pytest.approx(10 / (49 / 26.5), abs=0.2)


def test_answers_left_counts_retries_of_the_flagged_share_only():
    from ucd.profiles.progress import answers_left

    assert answers_left(10, 0, 0.5, 1) == 15  # 10 answers, then 5 retries
    assert answers_left(10, 4, 0.5, 1) == 19  # plus the 4 retries already due
    assert answers_left(10, 0, 0.5, 2) == 17.5
    assert answers_left(10, 0, 0.9, 0) == 10  # last attempt: no retries, however many get flagged
    assert answers_left(0, 0, 0.3, 1) == 0


def test_round_end_prints_progress_once(tmp_path):
    from ucd.profiles.progress import Progress

    lines: list[str] = []
    prog = Progress(4, 0, tmp_path / "progress.json", lines.append, every_s=3600)
    prog.start_round(4)
    prog.update(4, 4, 4, 100, 40)
    prog.flush()  # results since the last line: a line with them
    assert len(lines) == 2 and "users done 4/4" in lines[-1]
    prog.flush()  # nothing new: progress.json only, no repeated line
    assert len(lines) == 2 and json.loads((tmp_path / "progress.json").read_text())["users_done"] == 4


def test_llm_replicas_leave_room_for_the_embedder():
    from ucd.pipelines.profile_job.llm_replicas import ReplicaSpec, replicas_that_fit

    gpu = load_profile_config("gpu")  # 4 one-GPU replicas wanted, the embedder on a GPU too
    spec = ReplicaSpec(object, {}, {}, gpu.llm.concurrency, {"CPU": 2, "GPU": 1})
    assert replicas_that_fit(spec, gpu, {"CPU": 64, "GPU": 8}) == 4
    assert replicas_that_fit(spec, gpu, {"CPU": 64, "GPU": 4}) == 3  # not 4: the embedder would wait
    assert replicas_that_fit(spec, gpu, {"CPU": 64, "GPU": 1}) == 1  # at least one (it waits for a GPU)
    cpu = load_profile_config("cpu")
    spec = ReplicaSpec(object, {}, {}, 2, {"CPU": 1, "GPU": 0})
    assert replicas_that_fit(spec, cpu, {"CPU": 2}) == 1 and replicas_that_fit(spec, cpu, {"CPU": 8}) == 2
