"""``ucd quickstart``: the whole method end to end on the embedded default.

prepare ML-100K -> LLM profiles + embeddings (Ray Data, vLLM CPU, SmolLM2) -> baseline and
distilled SASRec (Ray Train, same seed) -> test comparison (table, paired test, plot in
MLflow) -> register and promote the distilled model -> Ray Serve answers one /recommend.

Each stage reuses finished outputs on a rerun: preparation and profiles by fingerprint (the
profile job resumes user by user), training by a record of the finished run keyed by its
settings, so a rerun after a kill repeats only the unfinished work.
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


class QuickstartConfig(Strict):
    dataset: str = "ml-100k"
    out: str = "out/quickstart"
    profile_config: str = "cpu"
    profile_overrides: list[str] = Field(default_factory=list)
    train_config: str = "ml-100k-sasrec"
    train_overrides: list[str] = Field(default_factory=list)
    seed: int = 42
    serve: bool = True
    serve_port: int = 8000
    model_name: str = "ucd-student"
    tracking: TrackingConfig = TrackingConfig(experiment="ucd-quickstart")


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


def _banner(log, text: str) -> None:
    log(f"\n=== {text} " + "=" * max(3, 70 - len(text)))


def _train(stage: str, cfg_path: str, overrides: list[str], stages: _Stages, log):
    from ucd.pipelines.train_job import profiles_id, run_training, train_key
    from ucd.train.config import TrainConfig

    cfg = build_config(TrainConfig, find_config("train", cfg_path), overrides)
    key = train_key(cfg) + f"-{cfg.epochs}-{cfg.patience}"
    if pid := profiles_id(cfg):  # the profile stage rewrites its folder when its settings change
        key += f"-{pid}"
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


def run_quickstart(cfg: QuickstartConfig, data_dir: Path | None = None, log=print) -> dict:
    t0 = time.perf_counter()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages = _Stages(out / "stages.json")
    tracking_overrides = [f"tracking.uri={cfg.tracking.uri}"] if cfg.tracking.uri else []
    tracking_overrides.append(f"tracking.experiment={cfg.tracking.experiment}")
    timings: dict[str, float] = {}

    _banner(log, f"1/6 prepare {cfg.dataset}")
    t = time.perf_counter()
    prepared = prepare_named(
        cfg.dataset, out / "data" / cfg.dataset, protocol="loo", data_dir=data_dir, log=log
    )
    timings["prepare"] = time.perf_counter() - t

    _banner(log, "2/6 LLM profiles and embeddings (Ray Data + vLLM)")
    from ucd.pipelines.profile_job import run_profile_job
    from ucd.profiles.config import load_profile_config

    t = time.perf_counter()
    pcfg = load_profile_config(cfg.profile_config, [*tracking_overrides, *cfg.profile_overrides])
    prof = run_profile_job(pcfg, prepared, out / "profiles" / cfg.dataset, log=log)
    timings["profiles"] = time.perf_counter() - t
    if not prof.embeddings.exists():
        raise DataError(f"profile job finished without {prof.embeddings}")

    _banner(log, "3/6 train baseline and distilled SASRec (Ray Train)")
    common = [
        f"data={prepared}",
        f"seed={cfg.seed}",
        f"registry.model_name={cfg.model_name}",
        *tracking_overrides,
        *cfg.train_overrides,
    ]
    t = time.perf_counter()
    base = _train(
        "baseline",
        cfg.train_config,
        [*common, "distill.enabled=false", "registry.enabled=false", f"output={out / 'models' / 'baseline'}"],
        stages,
        log,
    )
    dist = _train(
        "distilled",
        cfg.train_config,
        [
            *common,
            "distill.enabled=true",
            f"profiles={prof.embeddings}",
            f"output={out / 'models' / 'distilled'}",
        ],
        stages,
        log,
    )
    timings["train"] = time.perf_counter() - t

    _banner(log, "4/6 evaluate on the test users")
    from ucd.data.tensors import SequenceData
    from ucd.evaluate.offline import compare, evaluate_model, evaluate_most_popular, format_comparison

    data = SequenceData.load(prepared)
    report = compare(
        {
            "baseline": [evaluate_model(base["model_dir"], data, name="baseline")],
            "distilled": [evaluate_model(dist["model_dir"], data, name="distilled")],
            "most-popular": [evaluate_most_popular(data)],
        }
    )
    table = format_comparison(report)
    log(table)
    (out / "comparison.md").write_text(table + "\n")
    (out / "comparison.json").write_text(json.dumps(report, indent=2))
    plot = _plot(base, dist, out / "val_ndcg.png")

    _banner(log, "5/6 register and promote the distilled model (MLflow)")
    from ucd.tracking import runs as tracking

    mlflow = tracking.setup(cfg.tracking)
    with mlflow.start_run(run_id=dist["run_id"]):
        mlflow.log_artifact(str(plot), artifact_path="plots")
        mlflow.log_artifact(str(out / "comparison.md"), artifact_path="eval")
    version = tracking.promote(cfg.tracking, cfg.model_name, dist["model_version"], "production")
    log(f"[quickstart] {cfg.model_name} version {version} is @production")

    answer = None
    if cfg.serve:
        _banner(log, "6/6 serve it (Ray Serve) and ask for recommendations")
        answer = _serve_once(cfg, prepared, data, log)
    timings["total"] = time.perf_counter() - t0

    summary = {
        "prepared": str(prepared),
        "profiles": str(prof.profiles),
        "profile_embeddings": str(prof.embeddings),
        "profile_counts": prof.counts,
        "baseline_model": base["model_dir"],
        "distilled_model": dist["model_dir"],
        "registered": f"models:/{cfg.model_name}@production (version {version})",
        "comparison": str(out / "comparison.md"),
        "plot": str(plot),
        "tracking_uri": cfg.tracking.resolved_uri(),
        "recommend_answer": answer,
        "seconds": timings,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _banner(log, "where everything is")
    for k, v in summary.items():
        if k not in ("recommend_answer", "profile_counts", "seconds"):
            log(f"  {k:20s} {v}")
    log(f"  {'MLflow UI':20s} mlflow ui --backend-store-uri {cfg.tracking.resolved_uri()}")
    log(f"  {'wall time':20s} {timings['total'] / 60:.1f} min")
    return summary


def _serve_once(cfg: QuickstartConfig, prepared: Path, data, log) -> dict:
    """Deploy the production model with Ray Serve, ask over HTTP once, and shut it down."""
    import ray
    import requests
    from ray import serve

    from ucd.cli.serve_cli import connect, serve_app_module
    from ucd.serving import ServeConfig

    app = serve_app_module()
    # Training's Ray instance lacks the serve package in its runtime env: start a fresh one.
    ray.shutdown()
    connect(None)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": cfg.serve_port})
        scfg = ServeConfig(
            model=f"models:/{cfg.model_name}@production",
            data=str(prepared),
            tracking_uri=cfg.tracking.resolved_uri(),
            port=cfg.serve_port,
        )
        app.deploy(scfg)
        user = int(data.test.user_ids[0])
        url = f"http://127.0.0.1:{cfg.serve_port}/recommend"
        answer = requests.post(url, json={"user_id": user, "k": 10}, timeout=60)
        answer.raise_for_status()
        body = answer.json()
        log(
            f'[quickstart] POST {url} {{"user_id": {user}, "k": 10}} -> model version {body["model"].get("version")}'
        )
        for it in body["items"]:
            log(f"    {it['item_id']:5d}  {it['score']:7.3f}  {it['title']}")
        log(
            f"[quickstart] serve it yourself: ucd serve start --model models:/{cfg.model_name}@production --data {prepared}"
        )
        return body
    finally:
        serve.shutdown()
        ray.shutdown()


def load_quickstart_config(path: str | None, overrides: list[str] | None) -> QuickstartConfig:
    return build_config(QuickstartConfig, path, overrides)
