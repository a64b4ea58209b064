"""MLflow helpers shared by every job (profile, train, evaluate, serve).

Embedded default: a SQLite store and a local artifact folder under ``$UCD_HOME``; on a cluster,
``tracking.uri`` points at an MLflow server and artifacts go wherever that server says.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ucd.config import Strict, default_home


def _default_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{default_home() / 'mlflow.db'}"


class TrackingConfig(Strict):
    uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite under $UCD_HOME
    experiment: str = "ucd"
    # Only used when the experiment is created; empty: $UCD_HOME/mlartifacts for local stores.
    artifact_location: str = ""
    enabled: bool = True

    def resolved_uri(self) -> str:
        return self.uri or _default_uri()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def setup(cfg: TrackingConfig):
    """Point mlflow at the store and make sure the experiment exists; returns the module."""
    import mlflow

    uri = cfg.resolved_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(cfg.experiment) is None:
        location = cfg.artifact_location or None
        if location is None and not uri.startswith(("http://", "https://", "databricks")):
            location = (default_home() / "mlartifacts").resolve().as_uri()
        try:
            mlflow.create_experiment(cfg.experiment, artifact_location=location)
        except Exception:
            # Another process created it between our check and the call.
            if mlflow.get_experiment_by_name(cfg.experiment) is None:
                raise
    mlflow.set_experiment(cfg.experiment)
    return mlflow


@contextmanager
def run(
    cfg: TrackingConfig,
    run_name: str,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """An MLflow run with flattened params; yields the active run (or None when disabled)."""
    if not cfg.enabled:
        yield None
        return
    mlflow = setup(cfg)
    with mlflow.start_run(run_name=run_name, tags=tags) as active:
        if params:
            flat = {k: ("" if v is None else v) for k, v in _flatten(params).items()}
            items = list(flat.items())
            for i in range(0, len(items), 90):  # the REST API caps a batch at 100 params
                mlflow.log_params(dict(items[i : i + 90]))
        yield active


def log_student_model(
    folder: str | Path,
    model_name: str | None,
    alias: str | None,
) -> str | None:
    """Log a model folder as the run's pyfunc model ``model``; register it when named.

    Returns the registered version (as a string), or None when not registered.
    """
    import mlflow
    import torch

    from ucd.tracking.pyfunc import StudentPyfunc

    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=StudentPyfunc(),
        artifacts={"student": str(folder)},
        # Listing them avoids MLflow's slow requirement inference (it loads the model).
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "ucd"],
    )
    if not model_name:
        return None
    mv = mlflow.register_model(info.model_uri, model_name)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(model_name, alias, mv.version)
    return str(mv.version)


def promote(
    cfg: TrackingConfig, model_name: str, version: str | None, alias: str, from_alias: str | None = None
) -> str:
    """Point ``alias`` (e.g. ``production``) at a version, or at what ``from_alias`` points to."""
    mlflow = setup(cfg)
    client = mlflow.MlflowClient()
    if version is None:
        if from_alias is None:
            raise ValueError("give a version or --from-alias")
        version = client.get_model_version_by_alias(model_name, from_alias).version
    client.get_model_version(model_name, str(version))  # fails clearly if it does not exist
    client.set_registered_model_alias(model_name, alias, str(version))
    return str(version)
