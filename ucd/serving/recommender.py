"""The recommender core: one loaded model that validates requests and answers top-k in batches."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ucd.data.tensors import left_pad
from ucd.errors import ConfigError
from ucd.serving.catalogue import Catalogue
from ucd.serving.histories import KnownHistories
from ucd.serving.model_uri import locate_model
from ucd.serving.schemas import (
    ItemInfo,
    ModelInfo,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    RequestError,
    parse_request,
)
from ucd.train.model_dir import ITEMS_FILE, LoadedStudent, load_student


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible to this process (set num_gpus)")
    return device


@dataclass
class Query:
    """A validated request: the model input and what the answer needs."""

    user_id: int | None
    user_source_id: str | None
    history: np.ndarray  # all known items (int64), oldest first
    inputs: np.ndarray  # [max_len] int64, left-padded newest items
    k: int
    exclude_seen: bool
    truncated: bool
    recommender: Recommender


class Recommender:
    """One loaded model with its catalogue (and optionally users' histories)."""

    def __init__(
        self,
        loaded: LoadedStudent,
        info: ModelInfo,
        histories: KnownHistories | None = None,
        device: str = "cpu",
        max_request_items: int = 100_000,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.info = info
        self.max_len = loaded.config.max_len
        self.n_items = loaded.config.n_items
        self.catalogue = Catalogue(loaded.folder / ITEMS_FILE, self.n_items)
        self.histories = histories
        self.device = device
        self.max_request_items = max_request_items

    @classmethod
    def load(
        cls,
        uri: str,
        data: str | None = None,
        device: str = "cpu",
        tracking_uri: str = "",
        max_request_items: int = 100_000,
    ) -> Recommender:
        folder, reg = locate_model(uri, tracking_uri)
        device = pick_device(device)
        loaded = load_student(folder, device=device)
        cfg = loaded.config
        info = ModelInfo(
            uri=uri,
            resolved_uri=reg["resolved_uri"],
            name=reg.get("name"),
            version=reg.get("version"),
            run_id=reg.get("run_id") or loaded.meta.get("mlflow_run_id"),
            kind=cfg.kind,
            n_items=cfg.n_items,
            max_len=cfg.max_len,
            dataset=loaded.meta.get("dataset"),
            loaded_at=time.time(),
        )
        rec = cls(loaded, info, None, device, max_request_items)
        if data:
            rec.histories = KnownHistories(data, rec.catalogue)
        return rec

    # -- validation

    def _item_ids(self, items: list[int | str]) -> np.ndarray:
        if not items:
            raise RequestError(422, "items", "empty history: give at least one item")
        if len(items) > self.max_request_items:
            raise RequestError(
                422, "items", f"{len(items)} items exceed the limit of {self.max_request_items} per request"
            )
        out = np.empty(len(items), dtype=np.int64)
        by_source = self.catalogue.by_source
        for i, it in enumerate(items):
            if isinstance(it, str):
                v = by_source.get(it)
                if v is None:
                    raise RequestError(422, f"items[{i}]", f"unknown item source id {it!r}")
            else:
                if not 1 <= it <= self.n_items:
                    raise RequestError(
                        422, f"items[{i}]", f"unknown item id {it} (ids are 1..{self.n_items})"
                    )
                v = it
            out[i] = v
        return out

    def _user_history(self, user: int | str) -> tuple[int, str | None, np.ndarray]:
        if self.histories is None:
            raise RequestError(
                422, "user_id", "this server has no user histories (started without data=...); send items"
            )
        user_id, history = self.histories.lookup(user)
        if len(history) == 0:
            raise RequestError(422, "user_id", f"user {user!r} has an empty history")
        return user_id, self.histories.source_of.get(user_id), history

    def prepare(self, req: RecommendRequest | dict) -> Query:
        """Validate a request against this model; raises :class:`RequestError` (4xx)."""
        req = parse_request(req)
        if (req.user_id is None) == (req.items is None):
            raise RequestError(422, "user_id", "give exactly one of user_id or items")
        user_id = user_source = None
        if req.user_id is not None:
            user_id, user_source, history = self._user_history(req.user_id)
        else:
            history = self._item_ids(req.items or [])
        return Query(
            user_id=user_id,
            user_source_id=user_source,
            history=history,
            inputs=left_pad([history], self.max_len)[0],
            k=req.k,
            exclude_seen=req.exclude_seen,
            truncated=len(history) > self.max_len,
            recommender=self,
        )

    # -- scoring

    @torch.no_grad()
    def score(self, inputs: np.ndarray) -> torch.Tensor:
        """``[B, max_len]`` left-padded ids -> ``[B, n_items + 1]`` scores on the CPU."""
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.int64)).to(self.device)
        return self.model.score_last(x).float().cpu()

    def _response(self, q: Query, ids: list[int], values: list[float]) -> RecommendResponse:
        cat = self.catalogue
        items = [
            RecommendedItem(item_id=i, source_id=cat.source_ids[i], title=cat.titles[i], score=s)
            for i, s in zip(ids[: q.k], values[: q.k], strict=True)
            # Excluded items sit at -inf; they only surface when k exceeds the unseen items.
            if s != float("-inf")
        ]
        return RecommendResponse(
            user_id=q.user_id,
            user_source_id=q.user_source_id,
            items=items,
            k=q.k,
            exclude_seen=q.exclude_seen,
            history_length=len(q.history),
            used_history=min(len(q.history), self.max_len),
            truncated=q.truncated,
            model=self.info,
        )

    def answer_batch(self, queries: list[Query]) -> list[RecommendResponse]:
        """Top-k for several queries in one forward pass."""
        if not queries:
            return []
        scores = self.score(np.stack([q.inputs for q in queries]))
        for row, q in enumerate(queries):
            if q.exclude_seen:
                scores[row, torch.from_numpy(q.history)] = float("-inf")
        k_max = min(max(q.k for q in queries), self.n_items)
        top = torch.topk(scores[:, 1:], k_max, dim=1)
        values, ids = top.values.tolist(), (top.indices + 1).tolist()
        return [self._response(q, ids[row], values[row]) for row, q in enumerate(queries)]

    def recommend(self, requests: list[RecommendRequest | dict]) -> list[RecommendResponse]:
        """Validate and answer in one call (no batching across callers): the offline path."""
        return self.answer_batch([self.prepare(r) for r in requests])

    def item(self, key: int | str) -> ItemInfo:
        if isinstance(key, str):
            item_id = self.catalogue.by_source.get(key)
            if item_id is None:
                raise RequestError(404, "source_id", f"unknown item source id {key!r}")
        else:
            item_id = key
            if not 1 <= item_id <= self.n_items:
                raise RequestError(404, "item_id", f"unknown item id {key} (ids are 1..{self.n_items})")
        return self.catalogue.item(item_id)
