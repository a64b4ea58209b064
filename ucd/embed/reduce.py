"""Optional dimensionality reduction of profile embeddings (PCA), saved next to the output.

Fitted on training users only: under ``temporal`` the validation/test users' profiles must not
shape the projection that the student is trained against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PCA:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d)
    explained_variance_ratio: np.ndarray  # (k,)
    renormalize: bool = True

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, renormalize: bool = True) -> PCA:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"PCA needs at least 2 vectors, got shape {x.shape}")
        k = min(dim, x.shape[0], x.shape[1])
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        var = s**2
        total = var.sum() or 1.0
        # Sign convention: largest loading positive, so refits on the same data agree.
        signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
        vt = vt * signs[:, None]
        return cls(
            mean.astype(np.float32),
            vt[:k].astype(np.float32),
            (var[:k] / total).astype(np.float32),
            renormalize,
        )

    def transform(self, x: np.ndarray) -> np.ndarray:
        y = (np.asarray(x, dtype=np.float32) - self.mean) @ self.components.T
        if self.renormalize:
            y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return y.astype(np.float32)

    def save(self, path: str | Path, fitted_on: list[int]) -> Path:
        path = Path(path)
        np.savez(
            path,
            mean=self.mean,
            components=self.components,
            explained_variance_ratio=self.explained_variance_ratio,
            fitted_on=np.asarray(sorted(fitted_on), dtype=np.int32),
            meta=np.frombuffer(
                json.dumps({"method": "pca", "renormalize": self.renormalize}).encode(), dtype=np.uint8
            ),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> PCA:
        z = np.load(path)
        meta = json.loads(bytes(z["meta"]).decode())
        return cls(z["mean"], z["components"], z["explained_variance_ratio"], meta["renormalize"])
