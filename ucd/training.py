"""One training epoch and one evaluation pass, in plain PyTorch (no Ray).

Ray Train (:mod:`ucd.pipelines.train`) and the single-process benchmark loop both call these,
so the distributed job and the reference loop compute exactly the same thing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ucd.config import Strict
from ucd.distill import DistillConfig, DistillHead, combine_losses, distill_beta
from ucd.metrics import RankingEvaluator
from ucd.models import StudentConfig, bert4rec_mask, build_loss, build_student, next_item_labels
from ucd.seqdata import SplitRows, left_pad, seen_items
from ucd.tracking import TrackingConfig


class OptimConfig(Strict):
    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)  # per worker
    grad_clip: float | None = Field(None, gt=0)  # the paper clips the grad norm at 0.5


class RayConfig(Strict):
    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    accelerator_type: str | None = None
    max_failures: int = 0  # Ray Train restarts the workers from the latest checkpoint
    storage_path: str = ""  # empty: $UCD_HOME/ray_results; a shared or s3:// path on clusters


class RegisterConfig(Strict):
    enabled: bool = True
    model_name: str = "ucd-student"
    alias: str = "candidate"


class TrainConfig(Strict):
    """Everything one training run needs; YAML files under configs/train/ fill it."""

    data: str = ""  # prepared dataset folder
    profiles: str | None = None  # profile_embeddings.parquet (or its folder); needed to distil
    profile_coverage: float = Field(1.0, gt=0.0, le=1.0)
    run_name: str = ""  # empty: derived from dataset, model and distillation
    model: StudentConfig = StudentConfig()
    loss: Literal["full_ce", "sampled_softmax", "bce"] = "full_ce"
    n_negatives: int = 256
    distill: DistillConfig = DistillConfig()
    optim: OptimConfig = OptimConfig()
    epochs: int = Field(100, ge=1)
    patience: int = Field(10, ge=1)  # epochs without a better validation NDCG@10
    # Epochs without a better score count only from this epoch on, so no run stops before
    # min_epochs + patience: BERT4Rec on ML-100K sits on a plateau for its first ~60 epochs, and
    # patience alone then stops runs there by chance (a distilled run stopped at epoch 57 with
    # NDCG@10 0.0215; its baseline got past the plateau and reached 0.0573).
    min_epochs: int = Field(0, ge=0)
    # Model selection considers only epochs from this one on (patience counts from it too). On
    # small validation sets an early epoch can win by chance: ML-100K `temporal` BERT4Rec (128
    # validation users) kept epoch-3/5 weights on some seeds, baseline and distilled alike.
    select_from_epoch: int = Field(0, ge=0)
    seed: int = 42
    eval_batch_size: int = 512
    exclude_seen: bool = False  # remove history items from the ranking (stated in reports)
    output: str = ""  # where the final model folder goes; empty: $UCD_HOME/models/<run_name>
    ray: RayConfig = RayConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegisterConfig = RegisterConfig()

    @model_validator(mode="after")
    def _selection_within_epochs(self) -> TrainConfig:
        if self.select_from_epoch >= self.epochs:
            raise ValueError(
                f"select_from_epoch ({self.select_from_epoch}) must be below epochs ({self.epochs}): "
                "no epoch would be eligible as the best one"
            )
        return self

    def resolved_run_name(self, dataset: str) -> str:
        if self.run_name:
            return self.run_name
        tag = f"distill-{self.distill.distance}" if self.distill.enabled else "baseline"
        return f"{dataset}-{self.model.kind}-{tag}-s{self.seed}"


class StudentWithHead(nn.Module):
    """Student and distillation head in one module, so DDP and optimisers see both."""

    def __init__(self, cfg: TrainConfig, profile_dim: int | None) -> None:
        super().__init__()
        self.student = build_student(cfg.model)
        self.head: DistillHead | None = None
        if cfg.distill.enabled:
            if profile_dim is None:
                raise ValueError("distillation is enabled but no profile embeddings were given")
            self.head = DistillHead(cfg.distill, cfg.model.hidden, profile_dim)
        self.rec_loss = (
            build_loss(cfg.loss, n_negatives=cfg.n_negatives)
            if cfg.loss == "sampled_softmax"
            else build_loss(cfg.loss)
        )
        self.block = cfg.distill.block_index(cfg.model.n_blocks) if cfg.distill.enabled else None
        self.kind = cfg.model.kind
        self.mask_prob = cfg.model.mask_prob

    def forward(
        self,
        seq: Tensor,
        profiles: Tensor | None,
        has_profile: Tensor | None,
        with_distill: bool,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        if self.kind == "sasrec":
            inputs, labels = next_item_labels(seq)
        else:
            # BERT4Rec sees the whole sequence (L+1 trimmed to L) with random masks.
            inputs = seq[:, 1:]
            inputs, labels = bert4rec_mask(inputs, self.mask_prob, self.student.cfg.mask_token, generator)
        final, per_block = self.student.encode(inputs)
        l_rec = self.rec_loss(self.student, final, labels)
        l_d = None
        if with_distill and self.head is not None:
            valid = inputs > 0
            l_d = self.head(per_block[self.block], valid, profiles, has_profile)
        return l_rec, l_d


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def trim_padding(x: Tensor, keep: int = 0) -> Tensor:
    """Drop left-padding columns that every row has: outputs do not depend on them (positions are
    counted from the newest item), and short-sequence data such as Beauty trains several times
    faster. ``keep`` extra columns are kept for a token appended later (BERT4Rec's mask)."""
    longest = int((x > 0).sum(1).max()) if x.numel() else 0
    return x[:, x.shape[1] - min(x.shape[1], max(longest + keep, 1)) :]


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """This rank's share of a per-epoch shuffle; every rank gets the same number of rows.

    All ranks draw the same permutation (same seed and epoch) and take disjoint slices, so each
    worker sees its own users; the few rows past ``world * (n // world)`` wait for a later
    epoch's shuffle, which keeps DDP's collective calls in step.
    """
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per = n // world
    return perm[rank * per : (rank + 1) * per]


def train_epoch(
    module: nn.Module,
    core: StudentWithHead,
    optimizer: torch.optim.Optimizer,
    train_seq: Tensor,
    train_users: Tensor,
    profiles: Tensor | None,
    has_profile: Tensor | None,
    cfg: TrainConfig,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """One pass over this rank's users. ``module`` is ``core`` itself or its DDP wrapper."""
    module.train()
    order = epoch_order(len(train_seq), cfg.seed, epoch, rank, world)
    distilling = cfg.distill.enabled and epoch < cfg.distill.epochs
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch * 10 + rank)
    bs = cfg.optim.batch_size
    # Sums stay on the device until the epoch ends: a float() per batch would make the host
    # wait for the GPU at every step.
    sums = {k: torch.zeros((), device=device) for k in ("loss", "rec_loss", "distill_loss", "beta")}
    n_batches = 0
    for start in range(0, len(order), bs):
        idx = torch.from_numpy(order[start : start + bs])
        # One spare column: BERT4Rec drops the first one of the L+1 window.
        seq = trim_padding(train_seq[idx], keep=1).to(device)
        prof = has = None
        if distilling:
            users = train_users[idx]
            prof, has = profiles[users].to(device), has_profile[users].to(device)
        l_rec, l_d = module(seq, prof, has, distilling, gen)
        loss = combine_losses(l_rec, l_d, cfg.distill, epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        sums["loss"] += loss.detach()
        sums["rec_loss"] += l_rec.detach()
        if l_d is not None:
            sums["distill_loss"] += l_d.detach()
            sums["beta"] += distill_beta(l_rec, l_d, cfg.distill)
        n_batches += 1
    out = {k: float(v) / max(n_batches, 1) for k, v in sums.items()}
    out["batches"] = n_batches
    out["distilling"] = float(distilling)
    if not math.isfinite(out["loss"]):
        raise FloatingPointError(f"training loss is {out['loss']} at epoch {epoch}")
    return out


@torch.no_grad()
def evaluate(
    student: nn.Module,
    rows: SplitRows,
    n_items: int,
    max_len: int,
    exclude_seen: bool = False,
    batch_size: int = 512,
    ks: tuple[int, ...] = (5, 10, 20),
    device: torch.device | str = "cpu",
) -> RankingEvaluator:
    """Full ranking over the catalogue for every row; returns the filled evaluator."""
    student.eval()
    ev = RankingEvaluator(n_items, ks)
    for start in range(0, len(rows), batch_size):
        hist = rows.histories[start : start + batch_size]
        inputs = trim_padding(torch.from_numpy(left_pad(hist, max_len))).to(device)
        scores = student.score_last(inputs)
        targets = torch.from_numpy(rows.targets[start : start + batch_size]).to(device)
        seen = seen_items(hist, exclude_seen)
        ev.update(scores, targets, seen)
    return ev


def save_state(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
