"""Online recommendation without Ray: settings, request/response models and the recommender core.

The Ray Serve application (``serve/app.py``) is a thin shell around :class:`Recommender`: it
validates a request into a :class:`Query` (history looked up or given, mapped to internal ids,
truncated to the model's ``max_len``), batches queries, and asks :meth:`Recommender.answer_batch`
for the top-k. Keeping the core here means a direct in-process call (tests, benchmarks) runs
exactly the code that serving runs.

Ids: an integer is an internal id (items 1..N, users as in the prepared dataset); a string is a
source id (the id in the raw data, e.g. a MovieLens movie id or an Amazon ASIN).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow.compute as pc
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic import model_validator as _model_validator

from ucd import schema
from ucd.config import Strict
from ucd.data.tensors import left_pad
from ucd.errors import ConfigError, DataError
from ucd.train.model_dir import ITEMS_FILE, LoadedStudent, load_student, resolve_model_dir

MAX_K = 1000
TOKEN_ENV = "UCD_SERVE_TOKEN"
# Paths that answer without a token: probes must work for load balancers, docs carry no data.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


# --------------------------------------------------------------------------------------------
# Settings


class ServeConfig(Strict):
    """Settings of the serving application (``ucd serve start --config``, ``serve run`` args)."""

    model: str  # model folder or MLflow URI, e.g. models:/ucd-student@production
    data: str | None = None  # prepared dataset folder: enables requests by user_id
    name: str = "ucd"  # Serve application name
    route_prefix: str = "/"
    host: str = "127.0.0.1"  # HTTP proxy, used when `ucd serve start` starts Serve
    port: int = Field(8000, ge=1, le=65535)
    tracking_uri: str = ""  # MLflow store for models:/ URIs; empty: $MLFLOW_TRACKING_URI or ucd's default
    # Bearer token: prefer $UCD_SERVE_TOKEN or token_sha256; a plain `token` ends up in the app's args.
    token: str | None = None
    token_sha256: str | None = None
    max_batch_size: int = Field(32, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.005, ge=0.0, le=10.0)
    max_ongoing_requests: int | None = Field(None, ge=1)  # default: 2 * max_batch_size
    num_replicas: int | Literal["auto"] = 1
    min_replicas: int = Field(1, ge=0)  # autoscaling bounds, used when num_replicas is "auto"
    max_replicas: int = Field(4, ge=1)
    target_ongoing_requests: float | None = Field(None, gt=0)  # default: max_batch_size
    # Extra replicas while a redeploy replaces old ones: old replicas serve until new ones are up.
    max_surge_percent: int = Field(100, ge=0, le=100)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int | None = Field(None, ge=1)  # default: the replica's num_cpus (at least 1)
    max_request_items: int = Field(100_000, ge=1)  # bounds the request body, not the history used

    @_model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.max_batch_size:
            # Serve never hands a replica more than max_ongoing_requests at once, so larger
            # batches could never fill and every request would wait out batch_wait_timeout_s.
            raise ValueError(
                f"max_ongoing_requests={self.max_ongoing_requests} must be >= "
                f"max_batch_size={self.max_batch_size}"
            )
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} exceeds max_replicas={self.max_replicas}")
        if self.token_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.token_sha256):
            raise ValueError("token_sha256 must be 64 lowercase hex digits (sha256 of the token)")
        if self.token is not None and not self.token:
            raise ValueError("token must not be empty")
        return self

    @property
    def ongoing_requests(self) -> int:
        return self.max_ongoing_requests or 2 * self.max_batch_size

    def resolved_tracking_uri(self) -> str:
        from ucd.tracking.runs import TrackingConfig

        return TrackingConfig(uri=self.tracking_uri).resolved_uri()

    def token_hash(self) -> str | None:
        """sha256 of the bearer token from the config or ``$UCD_SERVE_TOKEN``; None: no auth.

        Only the hash travels to the replicas, so the token never appears in Serve's stored
        deployment arguments.
        """
        if self.token_sha256:
            return self.token_sha256
        token = self.token or os.environ.get(TOKEN_ENV) or None
        return hash_token(token) if token else None

    def public(self) -> dict[str, Any]:
        """The settings without the plain token (what a replica keeps and reports)."""
        out = self.model_dump(mode="json")
        out["token_sha256"] = self.token_hash()
        out["token"] = None
        return out


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenGuard:
    """Bearer-token check for every path outside :data:`OPEN_PATHS`."""

    def __init__(self, token_sha256: str | None = None) -> None:
        self.token_sha256 = token_sha256

    @property
    def enabled(self) -> bool:
        return self.token_sha256 is not None

    def rejects(self, path: str, authorization: str | None) -> str | None:
        """Why a request must be refused (401), or None when it may pass."""
        if not self.enabled or path.rstrip("/") in OPEN_PATHS or path in OPEN_PATHS:
            return None
        if not authorization:
            return "missing bearer token (header 'Authorization: Bearer <token>')"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "the Authorization header must read 'Bearer <token>'"
        # Constant-time comparison of the hashes, so timing tells nothing about the token.
        if not hmac.compare_digest(hash_token(token.strip()), self.token_sha256 or ""):
            return "invalid bearer token"
        return None


# --------------------------------------------------------------------------------------------
# API models

Id = StrictInt | StrictStr


class RecommendRequest(BaseModel):
    """Give exactly one of ``user_id`` (history looked up) or ``items`` (history, oldest first)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": 42, "k": 10},
                {"user_id": "196", "k": 5, "exclude_seen": False},
                {"items": [50, 181, "258"], "k": 10},
            ]
        },
    )

    user_id: Id | None = Field(None, description="internal user id (integer) or source user id (string)")
    items: list[Id] | None = Field(
        None, description="history, oldest first: internal item ids (integers) or source ids (strings)"
    )
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="number of items to return")
    exclude_seen: StrictBool = Field(True, description="never recommend an item of the history")


class RecommendedItem(BaseModel):
    item_id: int
    source_id: str
    title: str
    score: float


class ModelInfo(BaseModel):
    uri: str  # as configured, e.g. models:/ucd-student@production
    resolved_uri: str  # what was loaded, e.g. models:/ucd-student/3 or a folder
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    kind: str
    n_items: int
    max_len: int
    dataset: str | None = None
    loaded_at: float


class RecommendResponse(BaseModel):
    user_id: int | None
    user_source_id: str | None
    items: list[RecommendedItem]
    k: int
    exclude_seen: bool
    history_length: int  # items known for the request
    used_history: int  # items the model read (the newest max_len)
    truncated: bool
    model: ModelInfo


class ItemInfo(BaseModel):
    item_id: int
    source_id: str
    title: str
    text: str


# --------------------------------------------------------------------------------------------
# Errors


class RequestError(Exception):
    """A request the server refuses: HTTP status, the offending field and a readable message."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(status, field, message)
        self.status = status
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), "field": self.field}


def _field_of(loc: tuple | list) -> str:
    """``("body", "items", 3, "int")`` -> ``items[3]``: union member tags are not fields."""
    parts = [p for p in loc if p not in ("body", "path", "query", "header")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif not out:
            out = str(p)
    return out or "body"


def validation_error(errors: list[dict[str, Any]]) -> RequestError:
    """One :class:`RequestError` from pydantic/FastAPI errors, naming the first bad field."""
    if not errors:
        return RequestError(422, "body", "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return RequestError(400, "body", f"malformed JSON{': ' + str(reason) if reason else ''}")
    field = _field_of(first.get("loc", ()))
    # A value rejected by every member of a union gives one error per member: join them.
    msgs: list[str] = []
    for e in errors:
        if _field_of(e.get("loc", ())) == field:
            m = "unknown field" if e.get("type") == "extra_forbidden" else str(e.get("msg", "invalid value"))
            if m not in msgs:
                msgs.append(m)
    others = sum(_field_of(e.get("loc", ())) != field for e in errors)
    return RequestError(422, field, " or ".join(msgs) + (f" (and {others} more error(s))" if others else ""))


def parse_request(payload: Any) -> RecommendRequest:
    if isinstance(payload, RecommendRequest):
        return payload
    if not isinstance(payload, dict):
        raise RequestError(422, "body", f"expected a JSON object, got {type(payload).__name__}")
    try:
        return RecommendRequest.model_validate(payload)
    except ValidationError as e:
        raise validation_error(e.errors()) from None


# --------------------------------------------------------------------------------------------
# Catalogue and known histories


class Catalogue:
    """Item ids <-> source ids and titles, from the model folder's ``items.parquet``."""

    def __init__(self, path: str | Path, n_items: int) -> None:
        table = schema.read_table(path, "items", columns=["item_id", "source_id", "title", "text"])
        ids = table.column("item_id").to_numpy().astype(np.int64)
        if len(ids) != n_items or (len(ids) and (ids.min() != 1 or ids.max() != n_items)):
            raise DataError(
                f"{path}: catalogue holds ids {ids.min()}..{ids.max()}, model expects 1..{n_items}"
            )
        order = np.argsort(ids)
        src, titles = table.column("source_id").to_pylist(), table.column("title").to_pylist()
        # Index 0 is padding; lists are indexed by item id.
        self.source_ids: list[str] = [""] + [src[i] for i in order]
        self.titles: list[str] = [""] + [titles[i] for i in order]
        self._text = table.column("text")
        self._row_of = np.zeros(n_items + 1, dtype=np.int64)
        self._row_of[ids] = np.arange(len(ids))
        self.by_source = {s: i for i, s in enumerate(self.source_ids) if i}
        self.n_items = n_items

    def item(self, item_id: int) -> ItemInfo:
        return ItemInfo(
            item_id=item_id,
            source_id=self.source_ids[item_id],
            title=self.titles[item_id],
            text=self._text[int(self._row_of[item_id])].as_py(),
        )


class KnownHistories:
    """Each user's complete known sequence from a prepared dataset (for requests by user id).

    The longest row of a user, with its target appended, is the whole sequence: under ``loo``
    that is the test row; under ``temporal`` a user's rows are prefixes of one another.
    Stored flat (values + offsets) so millions of interactions cost one array.
    """

    def __init__(self, folder: str | Path, catalogue: Catalogue) -> None:
        folder = Path(folder)
        items = schema.read_table(folder / "items.parquet", "items", columns=["item_id", "source_id"])
        ids = items.column("item_id").to_numpy().astype(np.int64)
        src = items.column("source_id").to_pylist()
        mismatched = (
            len(ids) != catalogue.n_items
            or ids.min(initial=1) < 1
            or ids.max(initial=0) > catalogue.n_items
            or any(catalogue.source_ids[i] != s for i, s in zip(ids.tolist(), src, strict=True))
        )
        if mismatched:
            raise DataError(
                f"{folder}: its items differ from the model's catalogue (another dataset or another "
                "preparation); user histories would map to the wrong items"
            )
        users = schema.read_table(folder / "users.parquet", "users")
        seqs = schema.read_table(
            folder / "sequences.parquet", "sequences", columns=["user_id", "history", "target"]
        )
        user_col = seqs.column("user_id").to_numpy().astype(np.int64)
        hist = seqs.column("history").combine_chunks()
        offsets = hist.offsets.to_numpy().astype(np.int64)
        values = hist.values.to_numpy(zero_copy_only=False).astype(np.int32)
        target = seqs.column("target")
        has_target = pc.is_valid(target).to_numpy(zero_copy_only=False)
        targets = pc.fill_null(target, 0).to_numpy().astype(np.int32)
        lengths = np.diff(offsets) + has_target
        # The longest row per user: sort by (user, length) and keep each user's last row.
        order = np.lexsort((lengths, user_col))
        last = np.r_[user_col[order][1:] != user_col[order][:-1], True]
        rows = order[last]
        n_users = int(max(users.column("user_id").to_numpy().max(initial=0), user_col.max(initial=0)))
        self.row_of_user = np.full(n_users + 1, -1, dtype=np.int64)
        self.row_of_user[user_col[rows]] = np.arange(len(rows))
        out_len = lengths[rows]
        self.offsets = np.r_[0, np.cumsum(out_len)].astype(np.int64)
        self.values = np.empty(int(self.offsets[-1]), dtype=np.int32)
        for j, r in enumerate(rows):
            a, b = offsets[r], offsets[r + 1]
            start = self.offsets[j]
            self.values[start : start + (b - a)] = values[a:b]
            if has_target[r]:
                self.values[start + (b - a)] = targets[r]
        self.source_of = dict(
            zip(
                users.column("user_id").to_numpy().tolist(),
                users.column("source_id").to_pylist(),
                strict=True,
            )
        )
        self.by_source = {s: u for u, s in self.source_of.items()}
        self.n_users = len(rows)

    def lookup(self, user: int | str) -> tuple[int, np.ndarray]:
        """``(internal user id, history)``; raises :class:`RequestError` (404) if unknown."""
        if isinstance(user, str):
            uid = self.by_source.get(user)
            if uid is None:
                raise RequestError(404, "user_id", f"unknown user source id {user!r}")
        else:
            uid = user
        if not 0 <= uid < len(self.row_of_user) or self.row_of_user[uid] < 0:
            raise RequestError(404, "user_id", f"unknown user id {user!r}")
        j = int(self.row_of_user[uid])
        return int(uid), self.values[self.offsets[j] : self.offsets[j + 1]].astype(np.int64)


# --------------------------------------------------------------------------------------------
# Model resolution


def _parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/3`` -> (name, None, "3")."""
    spec = uri.removeprefix("models:/")
    if "@" in spec:
        name, alias = spec.rsplit("@", 1)
        return name, alias, None
    if "/" in spec:
        name, version = spec.rsplit("/", 1)
        return name, None, version
    raise ConfigError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")


def locate_model(uri: str, tracking_uri: str = "") -> tuple[Path, dict[str, Any]]:
    """Local folder of a model URI, plus what the registry says about it (name, version, run).

    An alias is pinned to its version before downloading, so the version reported is the one
    whose files were loaded even if the alias moves meanwhile.
    """
    if Path(uri).exists():
        return Path(uri), {"resolved_uri": str(Path(uri).resolve())}
    if ":/" not in uri:
        raise DataError(f"{uri}: no such model folder, and not an MLflow URI (models:/<name>@<alias>)")
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    info: dict[str, Any] = {"resolved_uri": uri}
    if uri.startswith("models:/"):
        name, alias, version = _parse_models_uri(uri)
        client = mlflow.MlflowClient()
        try:
            mv = (
                client.get_model_version_by_alias(name, alias)
                if alias is not None
                else client.get_model_version(name, version)
            )
        except Exception as e:
            raise DataError(
                f"{uri}: not found in the MLflow registry at {mlflow.get_tracking_uri()}: {e}"
            ) from e
        pinned = f"models:/{name}/{mv.version}"
        info = {"resolved_uri": pinned, "name": name, "version": str(mv.version), "run_id": mv.run_id}
        return resolve_model_dir(pinned), info
    if uri.startswith("runs:/"):
        info["run_id"] = uri.removeprefix("runs:/").split("/", 1)[0]
    return resolve_model_dir(uri), info


def check_model(uri: str, tracking_uri: str = "") -> None:
    """Fail early, before any replica starts, on a model URI that cannot resolve.

    Cheap: a folder's files or a registry lookup, nothing downloaded.
    """
    p = Path(uri)
    if p.exists():
        from ucd.train.model_dir import META_FILE, MODEL_FILE

        missing = [f for f in (MODEL_FILE, META_FILE, ITEMS_FILE) if not (p / f).exists()]
        if missing:
            raise DataError(f"{uri}: not a ucd model folder ({', '.join(missing)} missing)")
        return
    if not uri.startswith("models:/"):
        if ":/" not in uri:
            raise DataError(f"{uri}: no such model folder, and not an MLflow URI (models:/<name>@<alias>)")
        return
    import mlflow

    name, alias, version = _parse_models_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri or None)
    try:
        if alias is not None:
            client.get_model_version_by_alias(name, alias)
        else:
            client.get_model_version(name, version)
    except Exception as e:
        raise DataError(
            f"{uri}: not found in the MLflow registry at {tracking_uri or 'the default store'}: {e}"
        ) from e


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible to this process (set num_gpus)")
    return device


# --------------------------------------------------------------------------------------------
# The recommender core


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

    def prepare(self, req: RecommendRequest | dict) -> Query:
        """Validate a request against this model; raises :class:`RequestError` (4xx)."""
        req = parse_request(req)
        if (req.user_id is None) == (req.items is None):
            raise RequestError(422, "user_id", "give exactly one of user_id or items")
        user_id = user_source = None
        if req.user_id is not None:
            if self.histories is None:
                raise RequestError(
                    422, "user_id", "this server has no user histories (started without data=...); send items"
                )
            user_id, history = self.histories.lookup(req.user_id)
            user_source = self.histories.source_of.get(user_id)
            if len(history) == 0:
                raise RequestError(422, "user_id", f"user {req.user_id!r} has an empty history")
        else:
            history = self._item_ids(req.items or [])
        inputs = left_pad([history], self.max_len)[0]
        return Query(
            user_id=user_id,
            user_source_id=user_source,
            history=history,
            inputs=inputs,
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
        cat = self.catalogue
        out = []
        for row, q in enumerate(queries):
            items = [
                RecommendedItem(item_id=i, source_id=cat.source_ids[i], title=cat.titles[i], score=s)
                for i, s in zip(ids[row][: q.k], values[row][: q.k], strict=True)
                # Excluded items sit at -inf; they only surface when k exceeds the unseen items.
                if s != float("-inf")
            ]
            out.append(
                RecommendResponse(
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
            )
        return out

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


class BatchStats:
    """Counts of requests and batch sizes, for ``/stats`` and the load tests."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.batches = 0
        self.sizes: dict[int, int] = {}
        self.busy_s = 0.0
        self.errors_4xx = 0

    def record(self, size: int, seconds: float) -> None:
        self.requests += size
        self.batches += 1
        self.sizes[size] = self.sizes.get(size, 0) + 1
        self.busy_s += seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "mean_batch_size": self.requests / self.batches if self.batches else 0.0,
            "max_batch_size_seen": max(self.sizes, default=0),
            "batch_size_histogram": {str(k): v for k, v in sorted(self.sizes.items())},
            "model_seconds": round(self.busy_s, 4),
            "rejected_requests": self.errors_4xx,
        }
