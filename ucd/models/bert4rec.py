"""BERT4Rec (Sun et al., 2019): bidirectional self-attention trained by masked items."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ucd.models.body import SequentialRecommender, TransformerBody
from ucd.models.config import StudentConfig


def bert4rec_mask(
    input_ids: Tensor,
    mask_prob: float,
    mask_token: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Cloze masking: ``(masked_input, labels)``, labels 0 where nothing is to be predicted.

    Each real item is masked with probability ``mask_prob``. A row where the draw masked
    nothing gets its LAST real item masked, so every non-empty row trains and the
    inference situation (mask at the end) is always represented.
    """
    valid = input_ids > 0
    # Drawn where the generator lives (CPU generators are the common case), then moved.
    device = generator.device if generator is not None else input_ids.device
    draw = torch.rand(input_ids.shape, generator=generator, device=device).to(input_ids.device)
    masked = (draw < mask_prob) & valid
    length = input_ids.shape[1]
    cols = torch.arange(length, device=input_ids.device).expand_as(input_ids)
    last_real = torch.where(valid, cols, -1).max(dim=1).values
    need = ~masked.any(dim=1) & (last_real >= 0)
    masked |= need[:, None] & (cols == last_real[:, None])
    labels = torch.where(masked, input_ids, torch.zeros_like(input_ids))
    masked_input = torch.where(masked, torch.full_like(input_ids, mask_token), input_ids)
    return masked_input, labels


class BERT4Rec(SequentialRecommender):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = cfg.n_items
        self.mask_token = cfg.n_items + 1
        self.body = TransformerBody(
            n_embeddings=cfg.n_items + 2,
            max_len=cfg.max_len,
            hidden=cfg.hidden,
            n_blocks=cfg.n_blocks,
            n_heads=cfg.n_heads,
            dropout=cfg.dropout,
            norm_first=cfg.norm_first,
            causal=False,
            ffn_inner=4 * cfg.hidden,
            activation=nn.GELU,
        )
        # BERT's prediction head: a dense + GELU + LayerNorm transform and a per-item bias
        # in front of the tied embedding table.
        self.head_dense = nn.Linear(cfg.hidden, cfg.hidden)
        self.head_norm = nn.LayerNorm(cfg.hidden)
        self.head_bias = nn.Parameter(torch.zeros(cfg.n_items + 1))

    def transform(self, hidden: Tensor) -> Tensor:
        return self.head_norm(F.gelu(self.head_dense(hidden)))

    def output_bias(self) -> Tensor:
        return self.head_bias

    def mask(self, input_ids: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return bert4rec_mask(input_ids, self.cfg.mask_prob, self.mask_token, generator)

    def score_last(self, input_ids: Tensor) -> Tensor:
        """Next-item scores ``[B, n_items + 1]`` read at a mask token placed after the last item.

        The mask is appended; when the row is already ``max_len`` wide the oldest column is
        dropped instead. Positions count from the end, so both give the same result whenever
        the dropped column is padding.
        """
        mask_col = torch.full_like(input_ids[:, :1], self.mask_token)
        keep_from = 1 if input_ids.shape[1] >= self.cfg.max_len else 0
        shifted = torch.cat([input_ids[:, keep_from:], mask_col], dim=1)
        return self.logits(self.forward(shifted)[:, -1])
