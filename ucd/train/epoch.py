"""One training epoch and one evaluation pass, in plain PyTorch (no Ray).

Ray Train (:mod:`ucd.pipelines.train_job`) and the single-process benchmark loop both call these,
so the distributed job and the reference loop compute exactly the same thing.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ucd.data.tensors import SplitRows, left_pad, seen_items
from ucd.evaluate.metrics import RankingEvaluator
from ucd.models import bert4rec_mask, build_loss, build_student, next_item_labels
from ucd.models.distill import DistillHead, combine_losses, distill_beta
from ucd.train.config import OptimConfig, TrainConfig


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
