"""Where the served model comes from: a model folder or an MLflow URI, pinned to a version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ucd.errors import ConfigError, DataError
from ucd.train.model_dir import ITEMS_FILE, META_FILE, MODEL_FILE, resolve_model_dir


def _parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3")."""
    spec = uri.removeprefix("models:/")
    if "@" in spec:
        name, alias = spec.rsplit("@", 1)
        return name, alias, None
    if "/" in spec:
        name, version = spec.rsplit("/", 1)
        return name, None, version
    raise ConfigError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")


def _not_a_model(uri: str) -> DataError:
    return DataError(f"{uri}: no such model folder, and not an MLflow URI (models:/<name>@<alias>)")


def _registry_version(client, uri: str, store: str):
    """The registered version a ``models:/`` URI names now (an alias resolved), or DataError."""
    name, alias, version = _parse_models_uri(uri)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except Exception as e:
        raise DataError(f"{uri}: not found in the MLflow registry at {store}: {e}") from e


def locate_model(uri: str, tracking_uri: str = "") -> tuple[Path, dict[str, Any]]:
    """Local folder of a model URI, plus what the registry says about it (name, version, run).

    An alias is pinned to its version before downloading, so the version reported is the one
    whose files were loaded even if the alias moves meanwhile.
    """
    if Path(uri).exists():
        return Path(uri), {"resolved_uri": str(Path(uri).resolve())}
    if ":/" not in uri:
        raise _not_a_model(uri)
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    info: dict[str, Any] = {"resolved_uri": uri}
    if uri.startswith("models:/"):
        mv = _registry_version(mlflow.MlflowClient(), uri, mlflow.get_tracking_uri())
        name = _parse_models_uri(uri)[0]
        pinned = f"models:/{name}/{mv.version}"
        info = {"resolved_uri": pinned, "name": name, "version": str(mv.version), "run_id": mv.run_id}
        return resolve_model_dir(pinned), info
    if uri.startswith("runs:/"):
        info["run_id"] = uri.removeprefix("runs:/").split("/", 1)[0]
    return resolve_model_dir(uri), info


def check_model(uri: str, tracking_uri: str = "") -> None:
    """Fail early, before any replica starts, on a model URI that cannot resolve.

    Cheap: a folder's files or a registry lookup, nothing downloaded.
    """
    p = Path(uri)
    if p.exists():
        missing = [f for f in (MODEL_FILE, META_FILE, ITEMS_FILE) if not (p / f).exists()]
        if missing:
            raise DataError(f"{uri}: not a ucd model folder ({', '.join(missing)} missing)")
        return
    if not uri.startswith("models:/"):
        if ":/" not in uri:
            raise _not_a_model(uri)
        return
    import mlflow

    # A client of its own: the driver's global tracking URI stays as it was.
    client = mlflow.MlflowClient(tracking_uri=tracking_uri or None)
    _registry_version(client, uri, tracking_uri or "the default store")
