"""Recommendation losses, injected into training as small modules.

Each is called as ``loss(model, hidden [B, L, H], labels [B, L]) -> scalar``; label 0 means
"no target here" (padding, unmasked BERT4Rec positions). Only labelled positions are scored,
which also keeps the -inf padding column out of every softmax that has a target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ucd.errors import ConfigError


def next_item_labels(history_ids: Tensor) -> tuple[Tensor, Tensor]:
    """SASRec targets from a left-padded ``[B, L + 1]`` sequence: ``(inputs, labels)``.

    ``labels[:, i]`` is the item after ``inputs[:, i]``; it is 0 where the input is padding
    (the first real item has no context to be predicted from).
    """
    inputs = history_ids[:, :-1]
    labels = history_ids[:, 1:]
    return inputs, torch.where(inputs > 0, labels, torch.zeros_like(labels))


def _labelled(hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    keep = labels > 0
    return hidden[keep], labels[keep]


def _zero(model: nn.Module, hidden: Tensor) -> Tensor:
    # Stays in the graph so backward() and DDP see every parameter even with no targets.
    return hidden.sum() * 0.0 + sum(p.sum() * 0.0 for p in model.parameters())


class FullCrossEntropy(nn.Module):
    """Softmax over the whole catalogue (the "SASRec+" loss)."""

    def forward(self, model: nn.Module, hidden: Tensor, labels: Tensor) -> Tensor:
        h, y = _labelled(hidden, labels)
        if y.numel() == 0:
            return _zero(model, hidden)
        return F.cross_entropy(model.logits(h), y)


def _uniform_items(model: nn.Module, shape: tuple[int, ...], device, generator) -> Tensor:
    where = generator.device if generator is not None else device
    draw = torch.randint(1, model.n_items + 1, shape, generator=generator, device=where)
    return draw.to(device)


class SampledSoftmax(nn.Module):
    """Softmax over the positive and ``n_negatives`` uniformly drawn items per position.

    A negative that equals the positive is masked out rather than redrawn. With uniform
    sampling the logQ correction is a constant shift and is left out.
    """

    def __init__(self, n_negatives: int = 256, generator: torch.Generator | None = None):
        super().__init__()
        if n_negatives < 1:
            raise ConfigError(f"SampledSoftmax needs n_negatives >= 1, got {n_negatives}")
        self.n_negatives = n_negatives
        self.generator = generator

    def forward(self, model: nn.Module, hidden: Tensor, labels: Tensor) -> Tensor:
        h, y = _labelled(hidden, labels)
        if y.numel() == 0:
            return _zero(model, hidden)
        neg = _uniform_items(model, (y.numel(), self.n_negatives), y.device, self.generator)
        items = torch.cat([y[:, None], neg], dim=1)
        scores = model.score_items(h, items)
        scores = scores.masked_fill(
            torch.cat([torch.zeros_like(y[:, None], dtype=torch.bool), neg == y[:, None]], 1),
            float("-inf"),
        )
        return F.cross_entropy(scores, torch.zeros_like(y))


class BCEOneNegative(nn.Module):
    """Original SASRec loss: binary cross-entropy on the positive and one uniform negative."""

    def __init__(self, generator: torch.Generator | None = None):
        super().__init__()
        self.generator = generator

    def forward(self, model: nn.Module, hidden: Tensor, labels: Tensor) -> Tensor:
        h, y = _labelled(hidden, labels)
        if y.numel() == 0:
            return _zero(model, hidden)
        neg = _uniform_items(model, (y.numel(), 1), y.device, self.generator)
        scores = model.score_items(h, torch.cat([y[:, None], neg], dim=1))
        pos_loss = F.softplus(-scores[:, 0])
        # A collision with the positive carries no signal, so it is dropped.
        neg_loss = F.softplus(scores[:, 1]) * (neg[:, 0] != y).to(scores.dtype)
        return (pos_loss + neg_loss).mean()


_LOSSES = {
    "full_ce": FullCrossEntropy,
    "ce": FullCrossEntropy,
    "sampled_softmax": SampledSoftmax,
    "bce": BCEOneNegative,
}


def build_loss(name: str, **kw) -> nn.Module:
    """``full_ce`` (alias ``ce``), ``sampled_softmax`` (``n_negatives``), ``bce``."""
    try:
        cls = _LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of {sorted(_LOSSES)}") from None
    return cls(**kw)
