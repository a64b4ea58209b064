"""SASRec (Kang & McAuley, 2018): causal self-attention, next item at every position."""

from __future__ import annotations

from torch import Tensor, nn

from ucd.models.body import SequentialRecommender, TransformerBody
from ucd.models.config import StudentConfig


class SASRec(SequentialRecommender):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = cfg.n_items
        # The original point-wise feed-forward: width = hidden, ReLU.
        self.body = TransformerBody(
            n_embeddings=cfg.n_items + 1,
            max_len=cfg.max_len,
            hidden=cfg.hidden,
            n_blocks=cfg.n_blocks,
            n_heads=cfg.n_heads,
            dropout=cfg.dropout,
            norm_first=cfg.norm_first,
            causal=True,
            ffn_inner=cfg.hidden,
            activation=nn.ReLU,
        )

    def score_last(self, input_ids: Tensor) -> Tensor:
        """Next-item scores ``[B, n_items + 1]`` from the last (most recent) position."""
        return self.logits(self.forward(input_ids)[:, -1])
