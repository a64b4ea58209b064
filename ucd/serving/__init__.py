"""Online recommendation without Ray: settings, request/response models and the recommender core.

The Ray Serve application (:mod:`ucd.pipelines.serve_app`) is a thin shell around
:class:`~ucd.serving.recommender.Recommender`: it validates a request into a ``Query`` (history
looked up or given, mapped to internal ids, truncated to the model's ``max_len``), batches
queries, and asks ``Recommender.answer_batch`` for the top-k. Keeping the core here means a
direct in-process call (tests, benchmarks) runs exactly the code that serving runs.

Ids: an integer is an internal id (items 1..N, users as in the prepared dataset); a string is a
source id (the id in the raw data, e.g. a MovieLens movie id or an Amazon ASIN).

Modules: ``settings`` (ServeConfig), ``auth`` (TokenGuard), ``schemas`` (API models, RequestError),
``catalogue``, ``histories`` (requests by user id), ``model_uri`` (folder or MLflow URI),
``recommender`` (the model core, top-k) and ``stats`` (BatchStats). The names below are
re-exported for callers that import from ``ucd.serving`` directly.
"""

from ucd.serving.auth import TokenGuard
from ucd.serving.catalogue import Catalogue
from ucd.serving.histories import KnownHistories
from ucd.serving.model_uri import check_model, locate_model
from ucd.serving.recommender import Query, Recommender
from ucd.serving.schemas import (
    ItemInfo,
    ModelInfo,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    RequestError,
    validation_error,
)
from ucd.serving.settings import ServeConfig
from ucd.serving.stats import BatchStats

__all__ = [
    "BatchStats",
    "Catalogue",
    "ItemInfo",
    "KnownHistories",
    "ModelInfo",
    "Query",
    "RecommendRequest",
    "RecommendResponse",
    "RecommendedItem",
    "Recommender",
    "RequestError",
    "ServeConfig",
    "TokenGuard",
    "check_model",
    "locate_model",
    "validation_error",
]
