"""``ucd quickstart``: the whole method end to end on the embedded default.

prepare ML-100K -> LLM profiles + embeddings (Ray Data, vLLM CPU, SmolLM2) -> baseline and
distilled SASRec (Ray Train, same seed) -> test comparison (table, paired test, plot in
MLflow) -> register and promote the distilled model -> Ray Serve answers one /recommend.

By default it respects a newcomer's time: the LLM profiles a seeded share of the users and
training runs a shorter budget (:class:`QuickBudget`), so the run fits about 15 minutes on two
CPU cores; ``full`` (``ucd quickstart --full``) profiles every user with the model config's own
budget. The distilled run scales its distillation loss by the share of profiled users
(``distill.weight_by_coverage``), so partial coverage is handled, and the comparison says how
many users had a profile.

Each stage reuses finished outputs on a rerun: preparation and profiles by fingerprint (the
profile job resumes user by user, and a larger share contains a smaller one, so ``--full``
after the default asks only the new users), training by a record of the finished run under its
record key (:func:`ucd.train.run_key.record_key`), so a rerun after a kill repeats only the
unfinished work.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import Field

from ucd.config import Strict, build_config, find_config
from ucd.data.prepare import prepare_named
from ucd.errors import DataError
from ucd.schema import atomic_write_text
from ucd.tracking.runs import TrackingConfig


class QuickBudget(Strict):
    """What the default run does less of than ``full``, so that it ends in about 11-12 minutes
    on two shared CPU cores: profiles ~7 min, training ~4 min, the rest under a minute."""

    # SmolLM2 on vLLM CPU, with its retry round: 57 users (6%) took 7 min including the
    # engine's start; all 943 take ~57 min.
    user_share: float = Field(0.06, gt=0, le=1)
    user_seed: int = 0
    # ML-100K SASRec's best validation epoch is in the twenties: at 25 epochs the baseline's
    # test NDCG@10 matched the full budget's (200 epochs, patience 20, ~7 min for both runs).
    epochs: int = Field(25, ge=1)
    patience: int = Field(10, ge=1)


class QuickstartConfig(Strict):
    dataset: str = "ml-100k"
    out: str = "out/quickstart"
    full: bool = False  # every user profiled, the model config's training budget
    quick: QuickBudget = QuickBudget()
    profile_config: str = "cpu"
    profile_overrides: list[str] = Field(default_factory=list)
    train_config: str = "ml-100k-sasrec"
    train_overrides: list[str] = Field(default_factory=list)
    seed: int = 42
    serve: bool = True
    serve_port: int = 8000
    model_name: str = "ucd-student"
    tracking: TrackingConfig = TrackingConfig(experiment="ucd-quickstart")

    def tracking_overrides(self) -> list[str]:
        over = [f"tracking.uri={self.tracking.uri}"] if self.tracking.uri else []
        return [*over, f"tracking.experiment={self.tracking.experiment}"]

    def profile_job_overrides(self) -> list[str]:
        """The profile job's overrides: the quick share first, so explicit ones win."""
        q = self.quick
        share = [] if self.full else [f"user_share={q.user_share}", f"user_seed={q.user_seed}"]
        return [*share, *self.tracking_overrides(), *self.profile_overrides]

    def train_budget(self) -> list[str]:
        return [] if self.full else [f"epochs={self.quick.epochs}", f"patience={self.quick.patience}"]


class _Stages:
    """A JSON record of finished stages, each under the key of the settings that produced it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, stage: str, key: str) -> dict | None:
        rec = self.data.get(stage)
        return rec if rec and rec.get("key") == key else None

    def put(self, stage: str, key: str, value: dict) -> None:
        self.data[stage] = {"key": key, **value}
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str))


class _Clock:
    """Seconds per stage, for the closing report."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self.last, 1)
        self.last = now

    def total(self) -> float:
        self.seconds["total"] = round(time.perf_counter() - self.t0, 1)
        return self.seconds["total"]


def _banner(log, text: str) -> None:
    log(f"\n=== {text} " + "=" * max(3, 70 - len(text)))


def _train(stage: str, cfg_path: str, overrides: list[str], stages: _Stages, log):
    """One training run, or the record of the same run finished earlier (same record key)."""
    from ucd.pipelines.train_job import run_training
    from ucd.train.config import TrainConfig
    from ucd.train.run_key import run_keys

    cfg = build_config(TrainConfig, find_config("train", cfg_path), overrides)
    # The record key holds the profiles' identity: the profile stage rewrites its folder when
    # its settings or its share of users change, and the distilled run is trained again then.
    key = run_keys(cfg).record
    done = stages.get(stage, key)
    if done and (Path(done["model_dir"]) / "model.json").exists():
        log(f"[quickstart] {stage}: reusing {done['model_dir']} (finished earlier)")
        return done
    res = run_training(cfg, log=log)
    rec = {
        "model_dir": str(res.model_dir),
        "run_id": res.run_id,
        "model_version": res.model_version,
        "best_epoch": res.best_epoch,
        "epochs_run": len(res.history),
        "val_ndcg_at_10": [h["val_ndcg@10"] for h in res.history],
        "rec_loss": [h["train_rec_loss"] for h in res.history],
        "test": res.test,
    }
    stages.put(stage, key, rec)
    return stages.get(stage, key)


def _plot(baseline: dict, distilled: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, rec in (("baseline", baseline), ("distilled", distilled)):
        axes[0].plot(rec["val_ndcg_at_10"], label=name)
        axes[1].plot(rec["rec_loss"], label=name)
    axes[0].set(title="validation NDCG@10", xlabel="epoch")
    axes[1].set(title="training recommendation loss", xlabel="epoch")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _prepare(cfg: QuickstartConfig, out: Path, data_dir: Path | None, log) -> Path:
    _banner(log, f"1/6 prepare {cfg.dataset}")
    return prepare_named(cfg.dataset, out / "data" / cfg.dataset, protocol="loo", data_dir=data_dir, log=log)


def _profiles(cfg: QuickstartConfig, prepared: Path, out: Path, log):
    from ucd.pipelines.profile_job import run_profile_job
    from ucd.profiles.config import load_profile_config

    scope = "every user" if cfg.full else f"a seeded {cfg.quick.user_share:.0%} of the users"
    _banner(log, f"2/6 LLM profiles and embeddings of {scope} (Ray Data + vLLM)")
    pcfg = load_profile_config(cfg.profile_config, cfg.profile_job_overrides())
    prof = run_profile_job(pcfg, prepared, out / "profiles" / cfg.dataset, log=log)
    if not prof.embeddings.exists():
        raise DataError(f"profile job finished without {prof.embeddings}")
    return prof


def _train_both(cfg: QuickstartConfig, prepared: Path, embeddings: Path, out: Path, log) -> tuple[dict, dict]:
    _banner(log, "3/6 train baseline and distilled SASRec (Ray Train)")
    stages = _Stages(out / "stages.json")
    common = [
        f"data={prepared}",
        f"seed={cfg.seed}",
        f"registry.model_name={cfg.model_name}",
        *cfg.tracking_overrides(),
        *cfg.train_budget(),
        *cfg.train_overrides,
    ]
    base_only = ["distill.enabled=false", "registry.enabled=false", f"output={out / 'models' / 'baseline'}"]
    base = _train("baseline", cfg.train_config, [*common, *base_only], stages, log)
    distilled = ["distill.enabled=true", f"profiles={embeddings}", f"output={out / 'models' / 'distilled'}"]
    dist = _train("distilled", cfg.train_config, [*common, *distilled], stages, log)
    return base, dist


def _coverage(prof, data) -> dict:
    """How many of the training users the distilled run had a profile vector for."""
    from ucd import schema

    users = len(data.train_users)
    embedded = schema.read_table(prof.embeddings, "profile_embeddings", columns=["user_id"]).num_rows
    return {
        "profiled": sum(prof.counts.values()),
        "embedded": embedded,
        "users": users,
        "share": embedded / users,
    }


def _evaluate(data, base: dict, dist: dict, coverage: dict, out: Path, log) -> Path:
    """The comparison table (with the profile coverage under it) and the validation plot."""
    from ucd.evaluate.offline import compare, evaluate_model, evaluate_most_popular, format_comparison

    _banner(log, "4/6 evaluate on the test users")
    report = compare(
        {
            "baseline": [evaluate_model(base["model_dir"], data, name="baseline")],
            "distilled": [evaluate_model(dist["model_dir"], data, name="distilled")],
            "most-popular": [evaluate_most_popular(data)],
        }
    )
    report["profile_coverage"] = coverage
    note = (
        f"distilled from LLM profiles of {coverage['embedded']} of {coverage['users']} users "
        f"({coverage['share']:.0%}); epochs run: baseline {base['epochs_run']}, distilled {dist['epochs_run']}"
    )
    if coverage["share"] < 1:
        note += "; `ucd quickstart --full` profiles every user"
    table = f"{format_comparison(report)}\n\n{note}"
    log(table)
    (out / "comparison.md").write_text(table + "\n")
    (out / "comparison.json").write_text(json.dumps(report, indent=2))
    return _plot(base, dist, out / "val_ndcg.png")


def _register(cfg: QuickstartConfig, dist: dict, plot: Path, out: Path, log) -> str:
    from ucd.tracking import runs as tracking

    _banner(log, "5/6 register and promote the distilled model (MLflow)")
    mlflow = tracking.setup(cfg.tracking)
    with mlflow.start_run(run_id=dist["run_id"]):
        mlflow.log_artifact(str(plot), artifact_path="plots")
        mlflow.log_artifact(str(out / "comparison.md"), artifact_path="eval")
    version = tracking.promote(cfg.tracking, cfg.model_name, dist["model_version"], "production")
    log(f"[quickstart] {cfg.model_name} version {version} is @production")
    return version


def _report(summary: dict, tracking_uri: str, log) -> None:
    _banner(log, "where everything is")
    for k, v in summary.items():
        if k not in ("recommend_answer", "profile_counts", "profile_coverage", "seconds"):
            log(f"  {k:20s} {v}")
    log(f"  {'MLflow UI':20s} mlflow ui --backend-store-uri {tracking_uri}")
    c = summary["profile_coverage"]
    log(f"  {'profiled users':20s} {c['embedded']} of {c['users']} with a vector ({c['share']:.0%})")
    secs = summary["seconds"]
    stages = "  ".join(f"{k} {v:.0f}s" for k, v in secs.items() if k != "total")
    log(f"  {'wall time':20s} {secs['total'] / 60:.1f} min ({stages})")


def run_quickstart(cfg: QuickstartConfig, data_dir: Path | None = None, log=print) -> dict:
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    prepared = _prepare(cfg, out, data_dir, log)
    clock.lap("prepare")
    prof = _profiles(cfg, prepared, out, log)
    clock.lap("profiles")
    base, dist = _train_both(cfg, prepared, prof.embeddings, out, log)
    clock.lap("train")
    from ucd.data.tensors import SequenceData

    data = SequenceData.load(prepared)
    coverage = _coverage(prof, data)
    plot = _evaluate(data, base, dist, coverage, out, log)
    clock.lap("evaluate")
    version = _register(cfg, dist, plot, out, log)
    clock.lap("register")
    answer = None
    if cfg.serve:
        answer = _serve_once(cfg, prepared, data, log)
        clock.lap("serve")
    clock.total()
    summary = {
        "prepared": str(prepared),
        "profiles": str(prof.profiles),
        "profile_embeddings": str(prof.embeddings),
        "profile_counts": prof.counts,
        "profile_coverage": coverage,
        "baseline_model": base["model_dir"],
        "distilled_model": dist["model_dir"],
        "registered": f"models:/{cfg.model_name}@production (version {version})",
        "comparison": str(out / "comparison.md"),
        "plot": str(plot),
        "tracking_uri": cfg.tracking.resolved_uri(),
        "recommend_answer": answer,
        "seconds": clock.seconds,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _report(summary, cfg.tracking.resolved_uri(), log)
    return summary


def _serve_once(cfg: QuickstartConfig, prepared: Path, data, log) -> dict:
    """Deploy the production model with Ray Serve, ask over HTTP once, and shut it down; Ray
    Serve's own output goes to ``<out>/logs/serve.log``."""
    import ray
    from ray import serve

    from ucd.pipelines import serve_control
    from ucd.pipelines.console import job_console, route_worker_output
    from ucd.serving.settings import ServeConfig

    _banner(log, "6/6 serve it (Ray Serve) and ask for recommendations")
    model = f"models:/{cfg.model_name}@production"
    scfg = ServeConfig(
        model=model, data=str(prepared), tracking_uri=cfg.tracking.resolved_uri(), port=cfg.serve_port
    )
    log_path = Path(cfg.out).resolve() / "logs" / "serve.log"
    with job_console(log_path, log) as console:
        console.log(f"[quickstart] Ray Serve output: {log_path}")
        # Training's Ray instance lacks the serve package in its runtime env: start a fresh one.
        ray.shutdown()
        serve_control.connect(None)
        restore = route_worker_output(log_path)
        console.quiet_libraries()  # Ray Serve sets its console handlers up when first used
        try:
            return _ask_once(serve_control.start(scfg)[0]["url"], data, model, prepared, console.log)
        finally:
            serve.shutdown()
            restore()
            ray.shutdown()


def _ask_once(url: str, data, model: str, prepared: Path, log) -> dict:
    """One ``POST /recommend`` for the first test user, its answer on the console."""
    import os

    import requests

    from ucd.serving.auth import TOKEN_ENV

    user = int(data.test.user_ids[0])
    token = os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.post(url, json={"user_id": user, "k": 10}, headers=headers, timeout=60)
    answer.raise_for_status()
    body = answer.json()
    version = body["model"].get("version")
    log(f'[quickstart] POST {url} {{"user_id": {user}, "k": 10}} -> model version {version}')
    for it in body["items"]:
        log(f"    {it['item_id']:5d}  {it['score']:7.3f}  {it['title']}")
    log(f"[quickstart] serve it yourself: ucd serve start --model {model} --data {prepared}")
    return body


def load_quickstart_config(path: str | None, overrides: list[str] | None) -> QuickstartConfig:
    return build_config(QuickstartConfig, path, overrides)
