"""``run_profile_job``: plan, Ray, rounds, assembly, report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ucd.errors import DataError
from ucd.llm.prepare import model_name
from ucd.pipelines.console import (
    JobConsole,
    absorb_actor_restart_warning,
    ensure_ray,
    job_console,
    route_worker_output,
)
from ucd.pipelines.profile_job.assemble import assemble_profiles
from ucd.pipelines.profile_job.plan import ProfilePlan, plan_profile_job, profile_params
from ucd.pipelines.profile_job.report import (
    ProfileOutcome,
    ProfileResult,
    log_profile_done,
    log_profile_mlflow,
    profile_metrics,
    profile_result,
    write_profile_summary,
)
from ucd.pipelines.profile_job.rounds import ProfileRounds, pending_users
from ucd.profiles.config import ProfileJobConfig
from ucd.profiles.progress import Progress
from ucd.tracking import runs as tracking


def run_profile_job(
    cfg: ProfileJobConfig,
    data: str | Path,
    out: str | Path,
    log: Callable[[str], None] = print,
    generator: type | None = None,
) -> ProfileResult:
    """Profiles (and their vectors) for the training users of a prepared dataset, resumably.

    ``generator`` replaces the configured LLM backend with a UDF class (request rows in,
    ``backends.RESULT_SCHEMA`` rows out); tests use it to script bad answers.
    """
    t_start = time.monotonic()
    plan = plan_profile_job(cfg, data, out, generator)
    log_path = plan.out / "logs" / "profile.log"
    with job_console(log_path, log) as console:
        console.log(f"[profile] Ray, vLLM and worker output of this run: {log_path}")
        # Where the wall time goes (start-up costs apart from generation): summary.json "stages".
        stages: dict[str, Any] = {"setup_s": round(time.monotonic() - t_start, 2)}
        run_name = f"profile-{plan.prepared.dataset}"
        with tracking.run(cfg.tracking, run_name=run_name, params=profile_params(plan)) as active:
            o = _profile_on_ray(plan, stages, log_path, console)
            o.wall_s = time.monotonic() - t_start
            metrics = profile_metrics(o)
            write_profile_summary(plan, o, metrics)
            run_id = log_profile_mlflow(active, plan.out, metrics)
            log_profile_done(plan, o, console.log)
    return profile_result(plan, o, metrics, run_id)


def _profile_on_ray(
    plan: ProfilePlan, stages: dict[str, Any], log_path: Path, console: JobConsole
) -> ProfileOutcome:
    """Rounds until every user is settled, then the outputs; Ray is started here if needed."""
    import ray

    log = console.log
    started_ray, restore_console = False, None
    progress: Progress | None = None
    try:
        t = time.monotonic()
        started_ray = ensure_ray(plan.cfg.ray, log)
        stages["ray_start_s"] = round(time.monotonic() - t, 2)
        restore_console = route_worker_output(log_path)
        console.quiet_libraries()
        absorb_actor_restart_warning(log_path)
        ray.data.DataContext.get_current().enable_progress_bars = False
        users, pending, done = _users_to_ask(plan, log)
        retries = plan.cfg.checks.retries
        progress = Progress(
            len(users), len(users) - len(pending), plan.out / "progress.json", log, retries=retries
        )
        log(
            f"[profile] {plan.prepared.dataset}: {len(users)} users, {len(users) - len(pending)} already done "
            f"(run {plan.run_fp}), model {model_name(plan.cfg.llm.model)} via {plan.cfg.llm.backend}, "
            f"prompts {plan.tpl.version}"
        )
        rounds = ProfileRounds(plan, users, progress, log, on_replicas=console.quiet_libraries)
        try:
            n_rounds = rounds.run(pending, done)
        finally:
            stages["rounds"] = rounds.seconds
            stages["llm"] = _llm_stage_record(rounds)
        t = time.monotonic()
        summary = assemble_profiles(plan, users, log)
        stages["assemble_s"] = round(time.monotonic() - t, 2)
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C, or SIGTERM (`ray job stop`, a pre-emption), which the Ray driver's handler
        # turns into SystemExit; either unwinds through drain_profile_results' flush first.
        if progress is not None:
            # progress.json's request count then matches what reached the shards.
            progress.report()
            log(
                f"[profile] interrupted: {progress.requests} results of this run are in {plan.store.folder}; "
                "the same command resumes from them"
            )
        raise
    finally:
        t = time.monotonic()
        if started_ray:
            ray.shutdown()
        stages["ray_shutdown_s"] = round(time.monotonic() - t, 2)
        if restore_console is not None:
            restore_console()
    finals = summary.pop("finals")
    return ProfileOutcome(users, n_rounds, summary, finals, progress.snapshot(), stages, 0.0)


def _users_to_ask(plan: ProfilePlan, log: Callable[[str], None]) -> tuple[list[int], list[int], dict]:
    """The users of this run, those still to ask, and what is stored per user.

    With ``assemble_only`` the run is the settled users, and nobody is asked.
    """
    users = plan.users
    pending, done = pending_users(plan.store, users, plan.cfg.checks.retries)
    if plan.cfg.assemble_only:
        users = sorted(set(users) - set(pending))
        if not users:
            raise DataError(f"assemble_only: no selected user has a settled profile in {plan.out} yet")
        log(f"[profile] assemble_only: {len(users)} settled users, {len(pending)} left unasked")
        pending = []
    return users, pending, done


def _llm_stage_record(rounds: ProfileRounds) -> dict[str, Any]:
    """summary.json stages.llm: engines started, seconds until the first was up (and inside the
    replica, the engine's own start-up), the replicas that answered."""
    started = rounds.replicas_started
    return {
        "engines_started": len(started),
        "ready_s": rounds.llm_ready_s,
        "start_s": max((r["start_s"] for r in started), default=None),
        "answered_by": sorted(rounds.answered_by),
    }
