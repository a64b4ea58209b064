"""Student sequential recommenders (pure PyTorch): SASRec and BERT4Rec."""

from __future__ import annotations

from torch import nn

from ucd.errors import ConfigError
from ucd.models.bert4rec import BERT4Rec, bert4rec_mask
from ucd.models.body import SequentialRecommender, TransformerBody
from ucd.models.config import StudentConfig
from ucd.models.losses import (
    BCEOneNegative,
    FullCrossEntropy,
    SampledSoftmax,
    build_loss,
    next_item_labels,
)
from ucd.models.sasrec import SASRec

__all__ = [
    "BCEOneNegative",
    "BERT4Rec",
    "FullCrossEntropy",
    "SASRec",
    "SampledSoftmax",
    "SequentialRecommender",
    "StudentConfig",
    "TransformerBody",
    "bert4rec_mask",
    "build_loss",
    "build_student",
    "next_item_labels",
]


def build_student(cfg: StudentConfig) -> nn.Module:
    """Model for ``cfg.kind``; ``cfg.n_items`` must already hold the catalogue size."""
    if cfg.n_items < 1:
        raise ConfigError("StudentConfig.n_items must be set from the dataset (got 0)")
    if cfg.kind == "sasrec":
        return SASRec(cfg)
    return BERT4Rec(cfg)
