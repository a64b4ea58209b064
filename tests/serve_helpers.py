"""A tiny real SASRec trained in-process on a prepared dataset (no Ray Train), for serving tests."""

from __future__ import annotations

from pathlib import Path

import torch

from ucd.data.tensors import SequenceData
from ucd.models import StudentConfig, build_loss, build_student, next_item_labels
from ucd.train.model_dir import save_student


def train_tiny(data_dir: Path, out: Path, seed: int, epochs: int = 2, max_len: int = 30) -> Path:
    data = SequenceData.load(data_dir)
    cfg = StudentConfig(
        kind="sasrec", max_len=max_len, hidden=32, n_blocks=1, n_heads=1, dropout=0.1, n_items=data.n_items
    )
    torch.manual_seed(seed)
    model = build_student(cfg)
    loss_fn = build_loss("full_ce")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    seq = data.train_tensor(max_len)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(seq), generator=gen).split(128):
            inputs, labels = next_item_labels(seq[idx])
            final, _ = model.encode(inputs)
            loss = loss_fn(model, final, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    meta = {"dataset": data.dataset, "data_fingerprint": data.fingerprint, "seed": seed}
    return save_student(out, model.state_dict(), cfg, meta, Path(data_dir) / "items.parquet")
