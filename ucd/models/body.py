"""Transformer body shared by SASRec and BERT4Rec, and the common model API.

Inputs are LEFT-padded ``[B, L]`` id tensors: the most recent item sits at column L-1 and 0
is padding. Positions are counted from the END of the row (the last column gets position 0),
so adding or removing left padding never moves a real item's position embedding; together
with the key padding mask this makes outputs at real positions independent of padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        b, length, h = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, h // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, length, h))


class Block(nn.Module):
    def __init__(self, hidden: int, n_heads: int, dropout: float, norm_first: bool, ffn: nn.Module) -> None:
        super().__init__()
        self.attn = SelfAttention(hidden, n_heads, dropout)
        self.ffn = ffn
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), allowed))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, allowed)))
        return self.norm2(x + self.drop(self.ffn(x)))


def feed_forward(hidden: int, inner: int, activation: nn.Module, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Linear(hidden, inner), activation, nn.Dropout(dropout), nn.Linear(inner, hidden))


class TransformerBody(nn.Module):
    """Item embedding + learned (reversed) positions + transformer blocks.

    ``n_embeddings`` rows: 0 = padding, 1..n_items = items, and an extra row for BERT4Rec's
    mask token.
    """

    def __init__(
        self,
        n_embeddings: int,
        max_len: int,
        hidden: int,
        n_blocks: int,
        n_heads: int,
        dropout: float,
        norm_first: bool,
        causal: bool,
        ffn_inner: int,
        activation: type[nn.Module],
    ) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(n_embeddings, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(
                hidden,
                n_heads,
                dropout,
                norm_first,
                feed_forward(hidden, ffn_inner, activation(), dropout),
            )
            for _ in range(n_blocks)
        )
        # Post-norm blocks already end in a LayerNorm; pre-norm needs one after the stack.
        self.final_norm = nn.LayerNorm(hidden) if norm_first else nn.Identity()
        self.causal = causal
        self.max_len = max_len
        self.scale = math.sqrt(hidden)
        nn.init.normal_(self.item_emb.weight, std=hidden**-0.5)
        nn.init.normal_(self.pos_emb.weight, std=hidden**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def attention_mask(self, valid: Tensor) -> Tensor:
        """Boolean ``[B, 1, L, L]``, True where query i may attend to key j.

        The diagonal is always allowed: a padding query would otherwise see only masked keys
        and softmax would give NaN. Real queries are unaffected since their own key is real.
        """
        length = valid.shape[1]
        allowed = valid[:, None, None, :].expand(-1, 1, length, length)
        if self.causal:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=valid.device)
        return allowed | eye

    def encode(self, input_ids: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(final [B, L, H], [hidden after block 1, ..., after block n])``.

        Hidden states at padding positions are zeroed, so no consumer can pick them up.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {tuple(input_ids.shape)}")
        length = input_ids.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len={self.max_len}")
        valid = input_ids > 0
        keep = valid.unsqueeze(-1).to(self.item_emb.weight.dtype)
        positions = torch.arange(length - 1, -1, -1, device=input_ids.device)
        x = self.item_emb(input_ids) * self.scale + self.pos_emb(positions)
        x = self.emb_drop(x) * keep
        allowed = self.attention_mask(valid)
        per_block = []
        for block in self.blocks:
            x = block(x, allowed) * keep
            per_block.append(x)
        return self.final_norm(x) * keep, per_block


class SequentialRecommender(nn.Module):
    """Body + output head tied to the item embedding table.

    Score columns are 0..n_items; column 0 (padding) is always -inf, and BERT4Rec's mask row
    is never scored.
    """

    body: TransformerBody
    n_items: int

    def transform(self, hidden: Tensor) -> Tensor:
        """Hook for a per-model head transform applied before the dot product."""
        return hidden

    def output_bias(self) -> Tensor | None:
        return None

    def item_weights(self) -> Tensor:
        return self.body.item_emb.weight[: self.n_items + 1]

    def encode(self, input_ids: Tensor) -> tuple[Tensor, list[Tensor]]:
        return self.body.encode(input_ids)

    def forward(self, input_ids: Tensor, return_all: bool = False):
        final, per_block = self.encode(input_ids)
        return (final, per_block) if return_all else final

    def logits(self, hidden: Tensor) -> Tensor:
        """``[..., H] -> [..., n_items + 1]`` with the padding column at -inf."""
        scores = self.transform(hidden) @ self.item_weights().T
        bias = self.output_bias()
        if bias is not None:
            scores = scores + bias
        return scores.index_fill(-1, torch.tensor([0], device=scores.device), float("-inf"))

    def score_items(self, hidden: Tensor, item_ids: Tensor) -> Tensor:
        """Scores of chosen items: hidden ``[M, H]``, item_ids ``[M, K]`` -> ``[M, K]``."""
        weights = self.body.item_emb(item_ids)
        scores = torch.einsum("mh,mkh->mk", self.transform(hidden), weights)
        bias = self.output_bias()
        if bias is not None:
            scores = scores + bias[item_ids]
        return scores

    def score_last(self, input_ids: Tensor) -> Tensor:
        raise NotImplementedError
