"""The student as an MLflow pyfunc model, so generic MLflow tooling can score it too.

``predict`` takes a DataFrame with a ``history`` column (lists of internal item ids, oldest
first) and returns the top-``k`` item ids and scores per row. Serving uses the same folder
through :func:`ucd.train.model_dir.load_student` directly.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch


class StudentPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from ucd.train.model_dir import load_student

        self.loaded = load_student(context.artifacts["student"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from ucd.data.tensors import left_pad

        k = int((params or {}).get("k", 10))
        cfg = self.loaded.config
        hist = [np.asarray(h, dtype=np.int64) for h in model_input["history"]]
        with torch.no_grad():
            scores = self.loaded.model.score_last(torch.from_numpy(left_pad(hist, cfg.max_len)))
        top = torch.topk(scores, min(k, cfg.n_items), dim=-1)
        return pd.DataFrame({"items": top.indices.tolist(), "scores": top.values.tolist()})
