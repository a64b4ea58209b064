"""Configuration of the student sequential recommenders."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StudentConfig(BaseModel):
    """Shape of a SASRec / BERT4Rec student.

    Item ids are 1..n_items, 0 is padding; BERT4Rec's mask token is n_items + 1. ``n_items``
    stays 0 in YAML and is filled from the dataset at train time, so one config serves every
    dataset.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sasrec", "bert4rec"] = "sasrec"
    max_len: int = Field(50, ge=1)
    hidden: int = Field(64, ge=1)
    n_blocks: int = Field(2, ge=1)
    n_heads: int = Field(1, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    norm_first: bool = True
    mask_prob: float = Field(0.15, gt=0.0, le=1.0)
    n_items: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> StudentConfig:
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by n_heads={self.n_heads}")
        return self

    @property
    def mask_token(self) -> int:
        return self.n_items + 1
