"""The real path: ray.data.llm's vLLM processor on the CPU build, SmolLM2, real ML-100K users."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from profile_helpers import smollm2

from ucd.pipelines.profile_job import run_profile_job
from ucd.profiles.config import load_profile_config
from ucd.schema import PROFILES, profile_embeddings_schema, read_meta, read_table

USERS = 4


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, object_store_memory=400 * 2**20, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_vllm_pipeline_real_users(ray_local, ml100k_loo, tmp_path):
    model = smollm2()
    lines: list[str] = []
    cfg = load_profile_config(
        None,
        [
            f"llm.model={model}",
            f"limit_users={USERS}",
            "prompt.max_items=12",
            "sampling.max_tokens=48",
            "llm.max_model_len=1024",
            "checks.retries=0",
            "tracking.enabled=false",
            # Short answers from a 135M model: judge them on emptiness/looping, not length.
            "checks.min_chars=10",
            "embed.statuses=[ok, truncated]",
        ],
    )
    res = run_profile_job(cfg, ml100k_loo, tmp_path / "out", log=lines.append)
    assert cfg.llm.backend == "vllm" and res.rounds == 1

    prof = read_table(res.profiles, "profiles")
    # read_table checked every contract column's type; the contract's columns come first.
    assert prof.column_names[: len(PROFILES)] == PROFILES.names
    assert prof.column("user_id").to_pylist() == [1, 2, 3, 4]
    rows = prof.to_pylist()
    for r in rows:
        assert r["profile"].strip(), r  # every profile non-empty
        assert r["status"] in ("ok", "truncated", "failed")
        assert 0 < r["output_tokens"] <= 48 and r["prompt_tokens"] > 100 and r["n_history"] == 12
        assert r["model"] == model and r["prompt_version"] == "movies-structured-v1"
    meta = read_meta(res.profiles)
    assert {"dataset", "fingerprint", "model", "prompt_version"} <= set(meta)
    assert meta["dataset"] == "ml-100k" and meta["fingerprint"] == res.run_fingerprint

    emb = pq.read_table(res.embeddings)
    assert emb.schema.equals(profile_embeddings_schema(384), check_metadata=False)
    embedded = [r["user_id"] for r in rows if r["status"] in ("ok", "truncated")]
    assert sorted(emb.column("user_id").to_pylist()) == embedded
    if embedded:
        v = np.stack(emb.column("embedding").to_numpy(zero_copy_only=False))
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert sum(res.counts.values()) == USERS
    # Progress lines carry users done / total, tokens/s and an ETA.
    prog = [ln for ln in lines if ln.startswith("[profile] users")]
    assert prog and f"{USERS}/{USERS}" in prog[-1] and "tok/s" in prog[-1] and "ETA" in prog[-1]
    assert res.metrics["output_tokens_per_s"] > 0


@pytest.mark.slow
def test_vllm_retry_round_reuses_the_running_engine(ray_local, ml100k_loo, tmp_path, capfd):
    model = smollm2()
    cfg = load_profile_config(
        None,
        [
            f"llm.model={model}",
            "limit_users=3",
            "prompt.max_items=8",
            "sampling.max_tokens=16",
            "llm.max_model_len=1024",
            "checks.retries=1",
            # No 16-token answer is this long: every user is asked again, in a round of its own.
            "checks.min_chars=100000",
            "tracking.enabled=false",
        ],
    )
    lines: list[str] = []
    res = run_profile_job(cfg, ml100k_loo, tmp_path / "out", log=lines.append)
    prof = read_table(res.profiles, "profiles")
    assert res.rounds == 2 and prof.column("attempts").to_pylist() == [2, 2, 2]
    # Both rounds were answered by one engine, started once.
    llm = res.extra["stages"]["llm"]
    assert llm["engines_started"] == 1 and len(llm["answered_by"]) == 1
    # ray.data.llm logs this once per engine it starts; engine output goes to the job's log file.
    log = (tmp_path / "out" / "logs" / "profile.log").read_text()
    assert log.count("Max pending requests is set to") == 1
    # The console had the job's lines, not the engine's start-up or Ray Data's memory warnings.
    said = "".join(capfd.readouterr())
    assert "Max pending requests" not in said and "issue_detector" not in said
    assert any(ln.startswith("[profile] round 2:") for ln in lines)
