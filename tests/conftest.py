"""Shared fixtures. Real data comes from $UCD_DATA_DIR, else ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Caches, MLflow artifacts and Ray results of the tests stay in a temporary folder."""
    home = tmp_path_factory.mktemp("ucd-home")
    old = {k: os.environ.get(k) for k in ("UCD_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["UCD_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home}/mlflow.db"
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def data_dir() -> Path:
    from ucd.config import default_data_dir

    d = default_data_dir()
    if d is None or not (d / "ml-100k" / "u.data").exists():
        pytest.fail("real datasets not found: set UCD_DATA_DIR to the folder holding ml-100k/ and beauty/")
    return d


@pytest.fixture(scope="session")
def ml100k_loo(data_dir: Path, tmp_path_factory) -> Path:
    """ML-100K prepared once per test session (loo)."""
    from ucd.data.prepare import prepare_named

    out = tmp_path_factory.mktemp("prepared") / "ml-100k-loo"
    return prepare_named("ml-100k", out, protocol="loo", data_dir=data_dir, log=lambda *_: None)
