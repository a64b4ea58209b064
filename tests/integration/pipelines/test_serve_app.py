"""The Ray Serve application on 127.0.0.1: same answers as the offline model, bad input, auth,
batching under concurrency, Python handles, and hot reload to a newer registered version; and
that ``ucd serve`` deploys the packaged application, importable without the repository checkout.

One Ray instance and one Serve application for the module; tests run in file order and the
last ones redeploy it (reload, then a token).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import ray
import requests
import torch
import yaml
from ray import serve
from serve_helpers import train_tiny

from ucd.data.tensors import SequenceData, left_pad
from ucd.errors import DataError
from ucd.pipelines import serve_app, serve_control
from ucd.serving.catalogue import Catalogue
from ucd.serving.histories import KnownHistories
from ucd.serving.schemas import RecommendResponse, RequestError
from ucd.serving.settings import ServeConfig
from ucd.train.model_dir import load_student

ROOT = Path(__file__).resolve().parents[3]
APP = "ucd-test"
MAX_LEN = 30


@pytest.fixture(scope="module")
def models(ml100k_loo, tmp_path_factory):
    """Two tiny real models (different seeds) registered as versions 1 and 2; @production -> 1."""
    import mlflow

    from ucd.tracking.runs import TrackingConfig, log_student_model, run

    tmp = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{tmp}/mlflow.db"
    tracking = TrackingConfig(uri=uri, experiment="serve-test")
    folders, versions = [], []
    for seed in (1, 2):
        folder = train_tiny(ml100k_loo, tmp / f"model-{seed}", seed=seed, epochs=1, max_len=MAX_LEN)
        with run(tracking, f"tiny-{seed}"):
            versions.append(log_student_model(folder, "ucd-student", alias=None))
        folders.append(folder)
    assert versions == ["1", "2"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.set_registered_model_alias("ucd-student", "production", "1")
    return {"folders": folders, "tracking_uri": uri, "client": client}


@pytest.fixture(scope="module")
def data(ml100k_loo) -> SequenceData:
    return SequenceData.load(ml100k_loo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(models, ml100k_loo):
    """The application serving models:/ucd-student@production (no token), and its base URL.

    Started the way `ucd serve start` starts it, on a small Ray of this process (which
    `serve_control.start` then joins instead of starting its own).
    """
    port = _free_port()
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        settings = {
            "name": APP,
            "model": "models:/ucd-student@production",
            "data": str(ml100k_loo),
            "tracking_uri": models["tracking_uri"],
            "max_batch_size": 16,
            "batch_wait_timeout_s": 0.02,
            "num_cpus": 1,
        }
        summary, started = serve_control.start(ServeConfig(**settings, port=port))
        assert not started and summary["url"] == f"http://127.0.0.1:{port}/recommend"
        assert summary["model"]["version"] == "1"
        yield {"url": f"http://127.0.0.1:{port}", "settings": settings}
    finally:
        serve.shutdown()
        ray.shutdown()


def full_history(data: SequenceData, user: int) -> np.ndarray:
    """A user's complete known sequence: the test row's history plus its target."""
    i = int(np.flatnonzero(data.test.user_ids == user)[0])
    return np.r_[data.test.histories[i], data.test.targets[i]].astype(np.int64)


def offline_top(
    folder: Path, history: np.ndarray, k: int, exclude_seen: bool
) -> tuple[list[int], list[float]]:
    model = load_student(folder).model
    with torch.no_grad():
        scores = model.score_last(torch.from_numpy(left_pad([history], MAX_LEN)))[0]
    if exclude_seen:
        scores[torch.from_numpy(history)] = float("-inf")
    top = torch.topk(scores[1:], k)
    return (top.indices + 1).tolist(), top.values.tolist()


def post(url: str, body, **kw) -> requests.Response:
    return requests.post(f"{url}/recommend", json=body, timeout=60, **kw)


def assert_same(resp: dict, folder: Path, history: np.ndarray, k: int, exclude_seen: bool) -> None:
    ids, scores = offline_top(folder, history, k, exclude_seen)
    assert [it["item_id"] for it in resp["items"]] == ids
    assert [it["score"] for it in resp["items"]] == pytest.approx(scores, rel=1e-5, abs=1e-5)


def test_config_file_is_a_valid_serve_config(monkeypatch):
    import importlib

    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    ServeDeploySchema.model_validate(raw)
    module, _, attr = raw["applications"][0]["import_path"].partition(":")
    assert getattr(importlib.import_module(module), attr) is serve_app.build_app
    # A checkout's `serve run serve.app:build_app` runs the same packaged builder.
    monkeypatch.syspath_prepend(str(ROOT))
    assert importlib.import_module("serve.app").build_app is serve_app.build_app
    cfg = ServeConfig.model_validate(raw["applications"][0]["args"])
    assert cfg.ongoing_requests >= cfg.max_batch_size and cfg.num_replicas == "auto"
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        ServeConfig(model="x", max_batch_size=32, max_ongoing_requests=8)


def test_ucd_serve_deploys_the_packaged_app_without_a_checkout(models, tmp_path):
    """What a non-editable install holds: the ucd package alone, no serve/ next to it. The CLI's
    settings, its application module and the Serve application must all come from there."""
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "ucd", site / "ucd", ignore=shutil.ignore_patterns("__pycache__"))
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        sys.path.insert(0, {str(site)!r})
        from ucd.cli import build_parser
        from ucd.cli.serve_cli import load_serve_config
        from ucd.pipelines import serve_control

        args = build_parser().parse_args(["serve", "start", "--model", {str(models["folders"][0])!r}])
        module = serve_control.serve_app_module()
        app = module.build_app(load_serve_config(args))
        cls = app._bound_deployment.func_or_class
        assert module.__file__.startswith({str(site)!r}), module.__file__
        assert importlib.util.find_spec("serve") is None and "serve" not in sys.modules
        print(module.__name__, cls.__module__, type(app).__name__)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ucd.pipelines.serve_app", "ucd.pipelines.serve_app", "Application"]


def test_known_histories_use_each_users_longest_row(tmp_path):
    """Under a temporal split a user's rows are prefixes; the longest one plus its target wins."""
    import pyarrow as pa

    from ucd import schema

    meta = {"dataset": "toy", "fingerprint": "x"}
    items = pa.table(
        {
            "item_id": pa.array([1, 2, 3, 4], pa.int32()),
            "source_id": ["a", "b", "c", "d"],
            "title": ["A", "B", "C", "D"],
            "text": ["", "", "", ""],
        }
    )
    schema.write_table(items, tmp_path / "items.parquet", "items", meta)
    users = pa.table({"user_id": pa.array([1, 2], pa.int32()), "source_id": ["u1", "u2"]})
    schema.write_table(users, tmp_path / "users.parquet", "users", meta)
    seqs = pa.table(
        {
            "user_id": pa.array([1, 1, 2, 2], pa.int32()),
            "split": ["train", "valid", "train", "test"],
            "history": pa.array([[1, 2], [1, 2], [3], [3, 4]], pa.list_(pa.int32())),
            "target": pa.array([None, 3, None, 1], pa.int32()),
        }
    )
    schema.write_table(seqs, tmp_path / "sequences.parquet", "sequences", meta)
    known = KnownHistories(tmp_path, Catalogue(tmp_path / "items.parquet", 4))
    assert known.lookup(1)[1].tolist() == [1, 2, 3]
    uid, hist = known.lookup("u2")
    assert uid == 2 and hist.tolist() == known.lookup(2)[1].tolist() == [3, 4, 1]
    with pytest.raises(RequestError, match="user_id"):
        known.lookup(3)
    # A model trained on another preparation must not be paired with these histories.
    other = items.set_column(1, "source_id", pa.array(["a", "b", "d", "c"]))
    schema.write_table(other, tmp_path / "other" / "items.parquet", "items", meta)
    with pytest.raises(DataError, match="differ"):
        KnownHistories(tmp_path, Catalogue(tmp_path / "other" / "items.parquet", 4))


def test_http_answers_equal_the_offline_model(app, models, data):
    url, v1 = app["url"], models["folders"][0]
    users = [1, 196, 500]
    for user in users:
        hist = full_history(data, user)
        for exclude in (True, False):
            r = post(url, {"user_id": user, "k": 10, "exclude_seen": exclude})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["user_id"] == user and body["history_length"] == len(hist)
            assert body["model"]["version"] == "1" and body["model"]["name"] == "ucd-student"
            assert body["model"]["uri"] == "models:/ucd-student@production"
            assert_same(body, v1, hist, 10, exclude)
            if exclude:
                assert not set(hist.tolist()) & {it["item_id"] for it in body["items"]}
    # The source user id answers like the internal one; titles and source ids come from the catalogue.
    by_source = post(url, {"user_id": "196", "k": 5}).json()
    by_id = post(url, {"user_id": 196, "k": 5}).json()
    assert by_source["items"] == by_id["items"] and by_source["user_source_id"] == "196"
    cat = load_student(v1).folder / "items.parquet"
    import pyarrow.parquet as pq

    items = pq.read_table(cat).to_pandas().set_index("item_id")
    for it in by_id["items"]:
        assert it["title"] == items.loc[it["item_id"], "title"]
        assert it["source_id"] == items.loc[it["item_id"], "source_id"]

    # An explicit history, mixing internal and source ids, and a long one truncated (newest kept).
    hist = full_history(data, 1)[:12]
    mixed = [int(hist[0]), items.loc[int(hist[1]), "source_id"], *map(int, hist[2:])]
    for exclude in (True, False):
        body = post(url, {"items": mixed, "k": 20, "exclude_seen": exclude}).json()
        assert_same(body, v1, hist, 20, exclude)
    long = np.random.default_rng(0).integers(1, data.n_items + 1, size=500)
    body = post(url, {"items": long.tolist(), "k": 10, "exclude_seen": False}).json()
    assert body["truncated"] and body["history_length"] == 500 and body["used_history"] == MAX_LEN
    assert_same(body, v1, long, 10, False)
    body = post(url, {"items": long.tolist(), "k": 1000}).json()
    assert len(body["items"]) == min(1000, data.n_items - len(set(long.tolist())))


BAD = [
    # (body or raw text, status, field)
    ("{not json", 400, "body"),
    ([1, 2], 422, "body"),
    ({"user_id": 99999}, 404, "user_id"),
    ({"user_id": "no-such-user"}, 404, "user_id"),
    ({"items": [1, 99999]}, 422, "items[1]"),
    ({"items": ["no-such-item"]}, 422, "items[0]"),
    ({"items": []}, 422, "items"),
    ({"user_id": 1, "k": 0}, 422, "k"),
    ({"user_id": 1, "k": 1001}, 422, "k"),
    ({"user_id": 1, "k": "ten"}, 422, "k"),
    ({"user_id": 1, "items": [1]}, 422, "user_id"),
    ({}, 422, "user_id"),
    ({"user_id": 1.5}, 422, "user_id"),
    ({"user_id": 1, "exclude_seen": "maybe"}, 422, "exclude_seen"),
    ({"user_id": 1, "colour": "red"}, 422, "colour"),
]


@pytest.mark.parametrize(
    ("body", "status", "field"), BAD, ids=[f"{s}-{f}-{i}" for i, (_, s, f) in enumerate(BAD)]
)
def test_bad_input_gets_4xx_naming_the_field(app, body, status, field):
    url = app["url"]
    if isinstance(body, str):
        r = requests.post(
            f"{url}/recommend", data=body, headers={"Content-Type": "application/json"}, timeout=60
        )
    else:
        r = post(url, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["field"] == field and err["detail"].startswith(f"{field}:"), err
    # The replica keeps serving.
    assert post(url, {"user_id": 1, "k": 3}).status_code == 200


def test_items_probes_and_docs(app):
    url = app["url"]
    assert requests.get(f"{url}/healthz", timeout=30).json() == {"status": "ok"}
    ready = requests.get(f"{url}/readyz", timeout=30).json()
    assert ready["status"] == "ready" and ready["model"]["version"] == "1"
    item = requests.get(f"{url}/items/50", timeout=30).json()
    assert item["item_id"] == 50 and item["title"]
    same = requests.get(f"{url}/items/by-source/{item['source_id']}", timeout=30).json()
    assert same == item
    r = requests.get(f"{url}/items/999999", timeout=30)
    assert r.status_code == 404 and r.json()["field"] == "item_id"
    r = requests.get(f"{url}/items/abc", timeout=30)
    assert r.status_code == 422 and r.json()["field"] == "item_id"
    spec = requests.get(f"{url}/openapi.json", timeout=30).json()
    assert {"/recommend", "/healthz", "/readyz", "/items/{item_id}", "/stats"} <= set(spec["paths"])
    assert requests.get(f"{url}/docs", timeout=30).status_code == 200


def test_python_handle(app, models, data):
    handle = serve.get_app_handle(APP)
    resp = handle.recommend.remote({"user_id": 1, "k": 7}).result()
    assert isinstance(resp, RecommendResponse) and resp.model.version == "1"
    assert_same(resp.model_dump(), models["folders"][0], full_history(data, 1), 7, True)
    with pytest.raises(RequestError, match="items"):
        handle.recommend.remote({"items": [], "k": 3}).result()
    assert handle.describe.remote().result()["settings"]["token_sha256"] is None


def test_concurrent_requests_are_batched(app, data):
    url, handle = app["url"], serve.get_app_handle(APP)
    handle.reset_stats.remote().result()
    users = data.test.user_ids[:200].tolist()

    def call(user: int) -> tuple[int, int | None]:
        r = post(url, {"user_id": user, "k": 10})
        return r.status_code, r.json().get("user_id")

    with ThreadPoolExecutor(16) as pool:
        out = list(pool.map(call, users))
    assert [s for s, _ in out] == [200] * 200
    assert [u for _, u in out] == users  # each caller got its own answer back
    stats = requests.get(f"{url}/stats", timeout=30).json()
    assert stats["requests"] == 200
    assert sum(int(k) * v for k, v in stats["batch_size_histogram"].items()) == 200
    assert stats["max_batch_size_seen"] > 1 and stats["batches"] < 200, stats
    assert stats["max_batch_size_seen"] <= 16


def test_in_place_reconfigure_and_a_failed_reload(app, models, data):
    """What a user_config update (a `serve deploy` override) does: the running replica swaps
    models in place; a model that cannot load leaves the old one serving."""
    handle = serve.get_app_handle(APP)
    settings = handle.describe.remote().result()["settings"]
    handle.reconfigure.remote({**settings, "model": "/no/such/model"}).result()
    body = post(app["url"], {"user_id": 1, "k": 5}).json()
    assert body["model"]["version"] == "1"
    stats = handle.get_stats.remote().result()
    assert "/no/such/model" in stats["reloads"][-1]["error"]
    assert handle.describe.remote().result()["settings"]["model"] == "models:/ucd-student@production"
    v2 = str(models["folders"][1])
    handle.reconfigure.remote({**settings, "model": v2}).result()
    body = post(app["url"], {"user_id": 1, "k": 5}).json()
    assert body["model"]["resolved_uri"] == str(Path(v2).resolve())
    assert_same(body, models["folders"][1], full_history(data, 1), 5, True)
    handle.reconfigure.remote(settings).result()
    assert post(app["url"], {"user_id": 1, "k": 5}).json()["model"]["version"] == "1"


def test_hot_reload_switches_the_answering_version(app, models, data):
    from ucd.cli import main

    url = app["url"]
    models["client"].set_registered_model_alias("ucd-student", "production", "2")
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = post(url, {"user_id": 196, "k": 5})
            seen.append((r.status_code, r.json().get("model", {}).get("version") if r.ok else r.text))
            time.sleep(0.05)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        time.sleep(0.5)
        # The CLI command, in-process: it reuses this driver's Ray connection.
        assert main(["serve", "reload", "--name", APP]) == 0
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    assert seen and all(s == 200 for s, _ in seen), [x for x in seen if x[0] != 200][:5]
    versions = [v for _, v in seen]
    assert versions[0] == "1" and versions[-1] == "2", versions
    assert versions == sorted(versions)  # never back to the old model once the new one answers
    body = post(url, {"user_id": 196, "k": 10}).json()
    assert body["model"]["version"] == "2"
    assert_same(body, models["folders"][1], full_history(data, 196), 10, True)


def test_bearer_token(app, monkeypatch):
    url = app["url"]
    monkeypatch.setenv("UCD_SERVE_TOKEN", "s3cret-token")
    serve_app.deploy(app["settings"])
    ok = {"Authorization": "Bearer s3cret-token"}
    assert post(url, {"user_id": 1}, headers=ok).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        r = post(url, {"user_id": 1}, headers=headers)
        assert r.status_code == 401 and r.json()["field"] == "Authorization", r.text
        assert r.headers["WWW-Authenticate"] == "Bearer"
    # Refused before the body is read, even a malformed one.
    r = requests.post(
        f"{url}/recommend", data="{oops", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == 401
    assert requests.get(f"{url}/items/1", timeout=30).status_code == 401
    assert requests.get(f"{url}/stats", timeout=30).status_code == 401
    assert requests.get(f"{url}/items/1", headers=ok, timeout=30).status_code == 200
    for open_path in ("/healthz", "/readyz", "/openapi.json"):
        assert requests.get(f"{url}{open_path}", timeout=30).status_code == 200
    # Only the hash reaches the replicas.
    settings = serve.get_app_handle(APP).describe.remote().result()["settings"]
    assert settings["token"] is None and len(settings["token_sha256"]) == 64
