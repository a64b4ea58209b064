"""The profile job on Ray Data: user histories -> prompts -> LLM -> checks -> embedder -> Parquet.

- plan.py: users, prompts, model and run fingerprint, decided before Ray starts;
- rounds.py: the rounds (one Ray Data pass each) until every user's profile is settled;
- llm_replicas.py: the LLM engines, started once and shared by every round;
- ray_stages.py: the other stages of a round (requests, checks, embeddings);
- assemble.py: ``profiles.parquet`` and ``profile_embeddings.parquet`` from the shards;
- report.py: summary.json, the profile sample, MLflow and the closing console lines;
"""

from ucd.pipelines.console import ensure_ray
from ucd.pipelines.profile_job.job import run_profile_job
from ucd.pipelines.profile_job.plan import run_fingerprint, select_users, share_rows
from ucd.pipelines.profile_job.report import ProfileResult

__all__ = ["ProfileResult", "ensure_ray", "run_fingerprint", "run_profile_job", "select_users", "share_rows"]
