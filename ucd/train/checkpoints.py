"""A training run's progress, its checkpoint files and its stopping rule, in plain PyTorch.

A checkpoint folder holds ``state.pt`` (model and optimizer state plus the progress: the last
epoch, the best validation score and its epoch, per-epoch metrics, the epochs resumed at), which
resume needs, and ``best.pt``, the student's weights at the best epoch so far, which the run
ends with. Ray Train (:mod:`ucd.pipelines.train_worker`) moves the folder around; nothing here
knows about it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ucd.train.config import TrainConfig

STATE = "state.pt"
BEST = "best.pt"


def new_progress() -> dict:
    return {"epoch": -1, "best": -1.0, "best_epoch": -1, "history": [], "restarts": []}


def is_new_best(epoch: int, score: float, progress: dict, cfg: TrainConfig) -> bool:
    """Model selection: a better validation score, from ``select_from_epoch`` on."""
    return epoch >= cfg.select_from_epoch and score > progress["best"]


def early_stopped(epoch: int, best_epoch: int, cfg: TrainConfig) -> bool:
    """Patience is used up: the epochs after the best one, counted from min_epochs on (and from
    select_from_epoch on, since no earlier epoch can be the best one)."""
    return epoch - max(best_epoch, cfg.min_epochs - 1, cfg.select_from_epoch - 1) >= cfg.patience


def _save_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_checkpoint(
    folder: Path, core: nn.Module, optimizer: torch.optim.Optimizer, progress: dict, best_weights
) -> None:
    state = {"model": core.state_dict(), "optimizer": optimizer.state_dict(), "state": progress}
    _save_atomic(folder / STATE, state)
    _save_atomic(folder / BEST, best_weights)


def load_checkpoint(folder: Path, device: torch.device | str = "cpu") -> tuple[dict, dict | None]:
    """``(state.pt's content, best weights)``; the best weights always on the CPU."""
    saved = torch.load(folder / STATE, map_location=device, weights_only=False)
    best = torch.load(folder / BEST, map_location="cpu", weights_only=True)
    return saved, best


def resume_from(
    folder: Path, core: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device | str
) -> tuple[dict, dict | None]:
    """Load a checkpoint into ``core`` and ``optimizer``; returns the progress (with this restart
    recorded) and the best weights so far."""
    saved, best = load_checkpoint(folder, device)
    core.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    progress = saved["state"]
    progress["restarts"].append(progress["epoch"] + 1)
    return progress, best
