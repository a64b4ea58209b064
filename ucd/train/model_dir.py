"""The trained-model folder: what training writes, MLflow stores and serving loads.

A folder holds ``model.pt`` (the student's state dict), ``model.json`` (its StudentConfig and
where it came from) and ``items.parquet`` (the catalogue, so ids map back to source ids and
titles). Loading rebuilds the same module from its config and gives identical scores.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ucd.errors import DataError
from ucd.models import StudentConfig, build_student

MODEL_FILE = "model.pt"
META_FILE = "model.json"
ITEMS_FILE = "items.parquet"


@dataclass
class LoadedStudent:
    model: nn.Module
    config: StudentConfig
    meta: dict[str, Any]
    folder: Path


def save_student(
    folder: str | Path,
    state_dict: dict[str, torch.Tensor],
    cfg: StudentConfig,
    meta: dict[str, Any],
    items_parquet: str | Path,
) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, folder / MODEL_FILE)
    (folder / META_FILE).write_text(json.dumps({"student": cfg.model_dump(mode="json"), **meta}, indent=2))
    shutil.copyfile(items_parquet, folder / ITEMS_FILE)
    return folder


def load_student(folder: str | Path, device: str = "cpu") -> LoadedStudent:
    folder = Path(folder)
    for f in (MODEL_FILE, META_FILE, ITEMS_FILE):
        if not (folder / f).exists():
            raise DataError(f"{folder}: not a ucd model folder ({f} missing)")
    meta = json.loads((folder / META_FILE).read_text())
    cfg = StudentConfig.model_validate(meta.pop("student"))
    model = build_student(cfg)
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location=device, weights_only=True))
    model.to(device).eval()
    return LoadedStudent(model, cfg, meta, folder)


def resolve_model_dir(uri: str) -> Path:
    """A local folder, or an MLflow URI (``models:/name@alias``, ``runs:/id/model``) downloaded."""
    p = Path(uri)
    if p.exists():
        return p
    if ":/" not in uri:
        raise DataError(f"{uri}: no such model folder, and not an MLflow URI (models:/<name>@<alias>)")
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    # A pyfunc model keeps the ucd folder under artifacts/<folder name>.
    for cand in (local, *sorted(local.glob(f"artifacts/*/{META_FILE}"))):
        cand = cand if cand.is_dir() else cand.parent
        if (cand / META_FILE).exists():
            return cand
    raise DataError(f"{uri}: downloaded to {local}, but it holds no ucd model folder")
