"""Settings of the serving application: :class:`ServeConfig`."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import Field, model_validator

from ucd.config import Strict
from ucd.serving.auth import TOKEN_ENV, hash_token


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

    @model_validator(mode="after")
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
