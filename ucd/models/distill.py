"""Distilling LLM user profiles into a sequential recommender (pooling, projection, loss).

The student's hidden states after block k are pooled over the valid (non-padding) positions
and pulled towards the user's profile embedding; users without a profile contribute nothing.
While ``epoch < epochs`` the total loss is ``alpha * beta * L_distill + (1 - alpha) * L_rec``
(``beta = L_rec / L_distill``, detached, when ``balance`` is on), afterwards ``L_rec``.

Why the defaults differ from the paper
--------------------------------------
Taken literally (MSE on mean-pooled states, a learnable Linear on the profile side, beta
detached and unbounded, alpha = 0.4) this loss collapsed a student on ML-100K: the distill
loss went to ~0 and the recommendation loss back to ln |items|. Two things combine:

1. With beta detached, ``d(alpha * beta * L_d) = alpha * L_rec * d(log L_d)``: the weight on
   the distill gradient grows without bound as L_d shrinks, so the student keeps being
   pushed harder towards whatever makes L_d small.
2. With both sides learnable, the cheapest way to make L_d small is the constant solution:
   the projection maps every profile to one vector c (weights -> 0, bias -> c) and the
   student makes every user's pooled state equal c, which erases the user information the
   recommender needs.

The defaults close both doors:

* ``beta_max = 1``: beta is clamped, so the distill gradient is at most
  ``alpha * beta_max * dL_d`` however small L_d gets. With the scale-free distances below
  L_d is already O(1), so balancing only needs to shrink the distill term, never to amplify
  it; a user who picks a raw MSE can raise the bound.
* ``target_norm = "standardize"``: the projected profiles are standardised per dimension
  over the profiled users of the batch; a constant target is impossible by construction
  (zero mean, unit variance across users), so matching it needs user-specific pooled states.
* ``distance = "cosine"``: bounded in [0, 2] and blind to scale, so the student is not asked
  to change the magnitude of its residual stream, only its direction across users.
* ``variance_weight = 1``: a VICReg hinge ``mean_d relu(1 - std_d(z))`` on the projected
  profiles before normalisation. Standardisation is scale-free, so weight decay alone could
  otherwise shrink the projection until its variance is noise; the hinge is positive for a
  constant projection (it equals 1 there). It applies only with ``project="profile"``: a
  fixed profile side cannot collapse.

On the synthetic check in ``tests/test_distill.py`` (200 items, 2-block SASRec, 150 steps)
the literal loss ends at rec loss ~3.9 against ~1.03 without distillation, its projected
profiles shrinking to 7% of their initial variance; the defaults end at ~1.13. The same
defaults with ``beta_max = 10`` lagged visibly more (measured while choosing the bound).

Partial coverage
----------------
L_distill is a mean over the profiled users of the batch, so its weight does not depend on
how many there are: with 2% of users profiled, the 2-3 profiled users of a 128-user batch
carry the whole alpha = 0.4 share, about 50 times the pull each user gets at full coverage,
and their noise reaches every user through the shared weights. ``weight_by_coverage``
multiplies the term by the batch's profiled share, so each profiled user pulls as hard as at
full coverage. On by default: identical at full coverage, and at partial coverage it removed the
harm the plain mean did (docs/design.md, "Partial coverage").

``DistillConfig.paper()`` returns the literal configuration (``beta_max=None``,
``target_norm="none"``, ``variance_weight=0``, MSE, mean pooling) to reproduce the collapse.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from ucd.errors import ConfigError

PoolingName = Literal["mean", "exp", "attention", "last"]


# --- pooling over valid positions -------------------------------------------------------


def _weighted(hidden: Tensor, weights: Tensor) -> Tensor:
    return torch.einsum("bl,blh->bh", weights, hidden)


class MeanPool(nn.Module):
    def forward(self, hidden: Tensor, valid: Tensor) -> Tensor:
        w = valid.to(hidden.dtype)
        return _weighted(hidden, w / w.sum(1, keepdim=True).clamp_min(1.0))


class ExpPool(nn.Module):
    """Weights ``exp(rate * t)``, t = 0, 1, ... over the valid positions, oldest first.

    The shift by the row's largest t cancels in the normalisation and keeps exp finite for
    long sequences.
    """

    def __init__(self, rate: float = 0.1) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, hidden: Tensor, valid: Tensor) -> Tensor:
        v = valid.to(hidden.dtype)
        t = v.cumsum(1) - 1.0
        t_max = t.max(1, keepdim=True).values
        w = torch.exp(self.rate * (t - t_max)) * v
        return _weighted(hidden, w / w.sum(1, keepdim=True).clamp_min(1e-12))


class AttentionPool(nn.Module):
    """Softmax attention of one learned query over the valid positions."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(hidden) * hidden**-0.5)

    def forward(self, hidden: Tensor, valid: Tensor) -> Tensor:
        scores = hidden @ self.query / math.sqrt(hidden.shape[-1])
        # A finite fill (not -inf) keeps all-padding rows NaN-free; they are zeroed below.
        scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
        w = torch.softmax(scores, dim=1) * valid.to(hidden.dtype)
        return _weighted(hidden, w)


class LastPool(nn.Module):
    """Hidden state at the last valid position (zeros for a row with none)."""

    def forward(self, hidden: Tensor, valid: Tensor) -> Tensor:
        cols = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
        last = torch.where(valid, cols, -1).max(1).values
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp_min(0)]
        return picked * (last >= 0).to(hidden.dtype)[:, None]


def build_pooling(name: str, hidden: int) -> nn.Module:
    if name == "mean":
        return MeanPool()
    if name == "exp":
        return ExpPool()
    if name == "attention":
        return AttentionPool(hidden)
    if name == "last":
        return LastPool()
    raise ConfigError(f"unknown pooling {name!r}; choose mean, exp, attention or last")


# --- configuration ---------------------------------------------------------------------


class DistillConfig(BaseModel):
    """Profile distillation settings; see the module docstring for the choice of defaults."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    layer: int | None = Field(None, ge=1, description="block k, 1-based; None = last block")
    pooling: PoolingName = "mean"
    distance: Literal["mse", "rmse", "cosine", "infonce"] = "cosine"
    alpha: float = Field(0.4, ge=0.0, le=1.0)
    balance: bool = True
    beta_max: float | None = Field(1.0, gt=0.0, description="None = unbounded (paper)")
    epochs: int = Field(12, ge=0, description="E_distill: from this epoch on only L_rec")
    project: Literal["profile", "student", "none"] = "profile"
    target_norm: Literal["none", "l2", "standardize"] = "standardize"
    variance_weight: float = Field(1.0, ge=0.0)
    temperature: float = Field(0.1, gt=0.0)
    weight_by_coverage: bool = Field(
        True,
        description="scale L_distill by the batch's share of profiled users (partial coverage)",
    )

    @classmethod
    def paper(cls, **overrides) -> DistillConfig:
        """The paper's loss taken literally: known to collapse the student (kept to show it)."""
        literal = {
            "enabled": True,
            "pooling": "mean",
            "distance": "mse",
            "alpha": 0.4,
            "balance": True,
            "beta_max": None,
            "project": "profile",
            "target_norm": "none",
            "variance_weight": 0.0,
            "weight_by_coverage": False,  # the paper averages over the profiled users
        }
        return cls(**{**literal, **overrides})

    def block_index(self, n_blocks: int) -> int:
        """0-based index into the per-block hidden states for a model with ``n_blocks``."""
        k = n_blocks if self.layer is None else self.layer
        if not 1 <= k <= n_blocks:
            raise ConfigError(f"distill layer {k} is outside 1..{n_blocks}")
        return k - 1


# --- loss ----------------------------------------------------------------------------


def _masked_mean(z: Tensor, w: Tensor, n: Tensor) -> Tensor:
    return (w[:, None] * z).sum(0, keepdim=True) / n


def _standardize(z: Tensor, w: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-dimension standardisation over the rows with weight 1 (the profiled users)."""
    n = w.sum().clamp_min(1.0)
    mean = _masked_mean(z, w, n)
    var = _masked_mean((z - mean).pow(2), w, n)
    return (z - mean) / torch.sqrt(var + eps)


def variance_hinge(z: Tensor, gamma: float = 1.0, eps: float = 1e-4, weights: Tensor | None = None) -> Tensor:
    """VICReg variance term ``mean_d relu(gamma - std_d(z))`` over the rows of ``z`` (those with
    weight 1 when ``weights`` is given); 0 for fewer than two rows."""
    w = torch.ones(z.shape[0], device=z.device, dtype=z.dtype) if weights is None else weights
    n = w.sum()
    mean = _masked_mean(z, w, n.clamp_min(1.0))
    var = _masked_mean((z - mean).pow(2), w, (n - 1.0).clamp_min(1.0)).squeeze(0)
    hinge = F.relu(gamma - torch.sqrt(var + eps)).mean()
    return torch.where(n >= 2, hinge, hinge * 0.0)


class DistillHead(nn.Module):
    """Pooling + projection + distance; returns ``L_distill`` for one batch.

    ``project="profile"`` maps the profile embedding to the student's width (the paper),
    ``"student"`` maps the pooled state to the profile's width, ``"none"`` needs equal
    widths. The "target" is the profile side; ``target_norm`` applies to it.

    Users without a profile are masked out rather than indexed away: boolean indexing and
    ``if has.any()`` each make the host wait for the GPU, which small students feel more than
    the distillation maths (H200, Beauty SASRec, ``benchmarks/device_train.py``: distilled
    epochs 42% slower than the baseline's with those waits and a per-batch ``float()`` in the
    training loop, 32% without).
    """

    def __init__(self, cfg: DistillConfig, hidden: int, profile_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.pool = build_pooling(cfg.pooling, hidden)
        self.profile_proj: nn.Module = nn.Identity()
        self.student_proj: nn.Module = nn.Identity()
        if cfg.project == "profile":
            self.profile_proj = nn.Linear(profile_dim, hidden)
        elif cfg.project == "student":
            self.student_proj = nn.Linear(hidden, profile_dim)
        elif hidden != profile_dim:
            raise ConfigError(
                f"distill project='none' needs equal widths, got hidden={hidden}, profile_dim={profile_dim}"
            )

    def forward(
        self, block_hidden: Tensor, valid_mask: Tensor, profile_emb: Tensor, has_profile: Tensor
    ) -> Tensor:
        has = has_profile.bool()
        w = has.to(block_hidden.dtype)
        pooled = self.pool(block_hidden, valid_mask)
        # Missing profiles may hold anything (NaN included); zeros keep every row finite.
        profile_emb = torch.where(has[:, None], profile_emb.to(pooled.dtype), 0.0)
        student = self.student_proj(pooled)
        target_raw = self.profile_proj(profile_emb)
        target = self._normalize(target_raw, w)
        per_user = torch.where(has, self._distance(student, target, has), 0.0)
        loss = per_user.sum() / w.sum().clamp_min(1.0)
        if self.cfg.distance == "rmse":
            # Clamped: sqrt has an infinite slope at 0 (kept at exactly 0 without profiles).
            loss = torch.where(loss > 0, loss.clamp_min(1e-12).sqrt(), loss)
        if self.cfg.variance_weight > 0 and self.cfg.project == "profile":
            loss = loss + self.cfg.variance_weight * variance_hinge(target_raw, weights=w)
        if self.cfg.weight_by_coverage:
            # A mean over the profiled users alone gives each of them batch/n_profiled times the
            # pull they get at full coverage; this share restores it (identical at 100%).
            loss = loss * (w.sum() / w.numel())
        return loss

    def _normalize(self, z: Tensor, w: Tensor) -> Tensor:
        if self.cfg.target_norm == "l2":
            return F.normalize(z, dim=-1)
        if self.cfg.target_norm == "standardize":
            return _standardize(z, w)
        return z

    def _distance(self, s: Tensor, t: Tensor, has: Tensor) -> Tensor:
        """Per-user distance; the mean over profiled users is taken by the caller."""
        d = self.cfg.distance
        if d in ("mse", "rmse"):
            return (s - t).pow(2).mean(-1)
        if d == "cosine":
            return 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)
        logits = F.normalize(s, dim=-1) @ F.normalize(t, dim=-1).T / self.cfg.temperature
        # Only profiled users are candidates (a finite fill keeps all-masked rows NaN-free).
        logits = logits.masked_fill(~has[None, :], torch.finfo(logits.dtype).min)
        return F.cross_entropy(logits, torch.arange(s.shape[0], device=s.device), reduction="none")


def distill_beta(l_rec: Tensor, l_distill: Tensor, cfg: DistillConfig) -> Tensor:
    """The (detached) balancing weight; 0 when L_distill is 0, since it then adds nothing."""
    if not cfg.balance:
        return torch.ones((), device=l_rec.device, dtype=l_rec.dtype)
    l_rec, l_d = l_rec.detach(), l_distill.detach()
    beta = torch.where(l_d > 0, l_rec / l_d.clamp_min(1e-12), torch.zeros_like(l_rec))
    if cfg.beta_max is not None:
        beta = beta.clamp(max=cfg.beta_max)
    return beta


def combine_losses(l_rec: Tensor, l_distill: Tensor | None, cfg: DistillConfig, epoch: int) -> Tensor:
    """``alpha * beta * L_d + (1 - alpha) * L_rec`` while ``epoch < cfg.epochs``, else L_rec."""
    if not cfg.enabled or l_distill is None or epoch >= cfg.epochs:
        return l_rec
    beta = distill_beta(l_rec, l_distill, cfg)
    return cfg.alpha * beta * l_distill + (1.0 - cfg.alpha) * l_rec
