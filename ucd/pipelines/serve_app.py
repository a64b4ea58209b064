"""Ray Serve application: the ucd student behind a FastAPI ingress, with request batching.

    ucd serve start --model models:/ucd-student@production --data out/ml-100k
    serve run ucd.pipelines.serve_app:build_app model=models:/ucd-student@production data=out/ml-100k
    serve deploy serve/config.yaml

It lives in the installed package, so replicas import it on any node where ucd is installed;
``serve/app.py`` of a checkout only re-exports :func:`build_app`.

Every setting (:class:`~ucd.serving.settings.ServeConfig`) travels as the deployment's
``user_config``, so an update of that user_config (a ``deployments:`` override in a ``serve
deploy`` config) swaps the model inside running replicas. New builder args, or a redeploy from a
driver (``ucd serve reload``), replace the replicas instead, and ``max_surge_percent`` keeps the
old ones answering until the new ones are up. Either way no request is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from ucd import __version__
from ucd.config import build_config, deep_merge, load_yaml
from ucd.errors import ConfigError
from ucd.serving.auth import TokenGuard
from ucd.serving.model_uri import check_model
from ucd.serving.recommender import Query, Recommender
from ucd.serving.schemas import ItemInfo, RecommendRequest, RecommendResponse, RequestError, validation_error
from ucd.serving.settings import ServeConfig
from ucd.serving.stats import BatchStats

logger = logging.getLogger("ray.serve")
DEPLOYMENT = "Recommender"

api = FastAPI(
    title="ucd recommender",
    version=__version__,
    description=(
        "Top-k next-item recommendations from a ucd student (SASRec / BERT4Rec). Integers are "
        "internal ids, strings are source ids. Send `Authorization: Bearer <token>` when the "
        "server was started with a token; /healthz, /readyz and the docs stay open."
    ),
)


def _replica() -> StudentRecommender | None:
    try:
        return serve.get_replica_context().servable_object
    except Exception:
        return None


class BearerAuth:
    """ASGI middleware: refuses before routing, so an unauthenticated body is never parsed."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            replica = _replica()
            guard = replica.guard if replica is not None else TokenGuard()
            path, root = scope.get("path", ""), scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            auth = next(
                (v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None
            )
            why = guard.rejects(path, auth)
            if why:
                body = {"detail": f"Authorization: {why}", "field": "Authorization"}
                await JSONResponse(body, 401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


api.add_middleware(BearerAuth)


@api.exception_handler(RequestValidationError)
async def _invalid_request(_request, exc: RequestValidationError) -> JSONResponse:
    err = validation_error(list(exc.errors()))
    replica = _replica()
    if replica is not None:
        replica.stats.errors_4xx += 1
    return JSONResponse(err.body(), err.status)


@api.exception_handler(RequestError)
async def _refused(_request, exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), exc.status)


@serve.deployment(name=DEPLOYMENT)
@serve.ingress(api)
class StudentRecommender:
    """One replica: a loaded :class:`~ucd.serving.recommender.Recommender`, swapped atomically."""

    def __init__(self) -> None:
        self.guard = TokenGuard()
        self.stats = BatchStats()
        self.state: Recommender | None = None
        self.settings: dict[str, Any] = {}
        self.reloads: list[dict[str, Any]] = []
        self._loaded_key: tuple | None = None

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply settings; load the model when its URI, dataset or device changed."""
        cfg = ServeConfig.model_validate(user_config)
        self.guard = TokenGuard(cfg.token_hash())
        self._answer.set_max_batch_size(cfg.max_batch_size)
        self._answer.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        torch.set_num_threads(cfg.torch_threads or max(1, int(cfg.num_cpus)))
        key = (cfg.model, cfg.data, cfg.tracking_uri, cfg.device, cfg.max_request_items)
        if key == self._loaded_key and self.state is not None:
            self.settings = cfg.public()
            return
        await self._swap_model(cfg, key)

    async def _swap_model(self, cfg: ServeConfig, key: tuple) -> None:
        """Load the configured model in a thread while the old one keeps answering.

        Requests already validated against the old model finish with it (a query carries its model).
        """
        t = time.perf_counter()
        try:
            new = await asyncio.to_thread(
                Recommender.load, cfg.model, cfg.data, cfg.device, cfg.tracking_uri, cfg.max_request_items
            )
        except Exception as e:
            if self.state is None:
                raise  # nothing to serve: let Serve report the replica as failed
            # Keep answering with the model we have; /stats and `ucd serve status` show the error.
            logger.error(
                "reload of %s failed, still serving %s: %s", cfg.model, self.state.info.resolved_uri, e
            )
            self.reloads.append({"uri": cfg.model, "error": str(e), "at": time.time()})
            # Settings describe what is served: the model and data stay the old ones.
            kept = {k: self.settings[k] for k in ("model", "data", "tracking_uri")}
            self.settings = {**cfg.public(), **kept}
            return
        old = self.state.info.resolved_uri if self.state else None
        self.state, self._loaded_key, self.settings = new, key, cfg.public()
        self.reloads.append(
            {
                "uri": cfg.model,
                "resolved_uri": new.info.resolved_uri,
                "from": old,
                "seconds": time.perf_counter() - t,
            }
        )
        logger.info("serving %s (version %s)", new.info.resolved_uri, new.info.version)

    def _ready(self) -> Recommender:
        if self.state is None:
            raise RequestError(503, "model", "no model loaded yet")
        return self.state

    # -- HTTP API (also callable through a handle: handle.recommend.remote({...}))

    @api.get("/healthz", tags=["probes"])
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", tags=["probes"])
    async def readyz(self) -> JSONResponse:
        if self.state is None:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse({"status": "ready", "model": self.state.info.model_dump()})

    @api.post("/recommend", response_model=RecommendResponse, tags=["recommend"])
    async def recommend(self, request: RecommendRequest) -> RecommendResponse:
        """Top-k items for a user (history looked up) or an explicit history."""
        state = self._ready()
        try:
            query = state.prepare(request)
        except RequestError:
            self.stats.errors_4xx += 1
            raise
        return await self._answer(query)

    @api.get("/items/{item_id}", response_model=ItemInfo, tags=["catalogue"])
    async def item(self, item_id: int) -> ItemInfo:
        return self._ready().item(item_id)

    @api.get("/items/by-source/{source_id}", response_model=ItemInfo, tags=["catalogue"])
    async def item_by_source(self, source_id: str) -> ItemInfo:
        return self._ready().item(source_id)

    @api.get("/stats", tags=["operations"])
    async def http_stats(self) -> dict[str, Any]:
        return self.get_stats()

    # -- handle-only API

    def get_stats(self) -> dict[str, Any]:
        """Batch-size histogram and counters of this replica."""
        return {
            **self.stats.as_dict(),
            "replica": serve.get_replica_context().replica_id.unique_id,
            "model": self.state.info.model_dump() if self.state else None,
            "reloads": self.reloads[-10:],
        }

    def reset_stats(self) -> None:
        self.stats.reset()

    def describe(self) -> dict[str, Any]:
        """Settings (token only as its hash) and the model this replica answers with."""
        return {"settings": self.settings, "model": self.state.info.model_dump() if self.state else None}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _answer(self, queries: list[Query]) -> list[RecommendResponse]:
        t = time.perf_counter()
        out: list[Any] = [None] * len(queries)
        # Around a reload one batch can hold queries for the old and the new model.
        groups: dict[int, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(id(q.recommender), []).append(i)
        for idx in groups.values():
            rec = queries[idx[0]].recommender
            answers = await asyncio.to_thread(rec.answer_batch, [queries[i] for i in idx])
            for i, a in zip(idx, answers, strict=True):
                out[i] = a
        self.stats.record(len(queries), time.perf_counter() - t)
        return out


def load_config(args: dict[str, Any] | ServeConfig) -> ServeConfig:
    """Settings from builder args; ``config=<yaml>`` names a file the other args override."""
    if isinstance(args, ServeConfig):
        return args
    args = dict(args)
    path = args.pop("config", None)
    base = deep_merge(load_yaml(path), args) if path else args
    return build_config(ServeConfig, base=base)


def deployment_options(cfg: ServeConfig) -> dict[str, Any]:
    """Serve deployment options: resources, replicas or autoscaling, and the settings as user_config."""
    options: dict[str, Any] = {
        "max_ongoing_requests": cfg.ongoing_requests,
        "ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        "user_config": cfg.public(),
        "max_surge_percent": cfg.max_surge_percent,
        # A model that cannot load fails fast instead of retrying 20 times.
        "max_constructor_retry_count": 3,
    }
    if cfg.num_replicas == "auto":
        options["autoscaling_config"] = {
            "min_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            # Enough queued requests per replica to fill a batch before scaling out.
            "target_ongoing_requests": cfg.target_ongoing_requests or cfg.max_batch_size,
        }
    else:
        options["num_replicas"] = cfg.num_replicas
    return options


def build_app(args: dict[str, Any] | ServeConfig) -> serve.Application:
    """Application builder for ``serve run ...:build_app key=value ...`` and Serve config files."""
    cfg = load_config(args)
    # Resolve here: the replicas then use the store this driver (or `serve deploy`) meant.
    cfg = cfg.model_copy(update={"tracking_uri": cfg.resolved_tracking_uri()})
    check_model(cfg.model, cfg.tracking_uri)
    if cfg.num_gpus == 0 and cfg.device == "cuda":
        raise ConfigError("device=cuda needs num_gpus > 0")
    return StudentRecommender.options(**deployment_options(cfg)).bind()


def deploy(args: dict[str, Any] | ServeConfig, blocking: bool = False) -> DeploymentHandle:
    """Deploy (or redeploy) the application on the connected Ray cluster; returns its handle."""
    cfg = load_config(args)
    return serve.run(build_app(cfg), name=cfg.name, route_prefix=cfg.route_prefix, blocking=blocking)
