"""Operating the Ray Serve application: connect, start, reload, status, stop (what ``ucd serve`` runs).

The deployed code is :mod:`ucd.pipelines.serve_app` of the installed package, so nothing is
shipped with the job: every node that has ucd installed can run the replicas.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import ModuleType
from typing import Any

import ray
from ray import serve

from ucd.errors import UcdError
from ucd.pipelines import serve_app
from ucd.serving.settings import ServeConfig


def serve_app_module() -> ModuleType:
    """The module ``ucd serve`` deploys (it has ``build_app`` and ``deploy``)."""
    return serve_app


def connect(address: str | None, num_cpus: int | None = None, dashboard: bool = False) -> bool:
    """Join a Ray cluster, or start a local one when ``address`` is None; True if started here."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address)
        return False
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard)
    return True


def _connect_running(address: str | None) -> None:
    """Join the cluster an application runs on: ``address``, else $RAY_ADDRESS, else a local one."""
    connect(address or os.environ.get("RAY_ADDRESS") or "auto")


def start(
    cfg: ServeConfig, address: str | None = None, num_cpus: int | None = None, dashboard: bool = False
) -> tuple[dict[str, Any], bool]:
    """Deploy on ``address`` (default $RAY_ADDRESS, else a new local Ray) with Serve's HTTP proxy.

    Returns where it answers plus the model it loaded, and whether a local Ray was started here
    (it then lives only as long as this process).
    """
    started = connect(address or os.environ.get("RAY_ADDRESS"), num_cpus, dashboard)
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    handle = serve_app.deploy(cfg)
    info = handle.describe.remote().result()
    url = f"http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
    return {
        "app": cfg.name,
        "url": f"{url}/recommend",
        "docs": f"{url}/docs",
        "model": info["model"],
    }, started


def serve_until_signalled() -> None:
    """Block until Ctrl-C or SIGTERM, then shut Serve down."""
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop_event.wait()
    serve.shutdown()


def reload(
    name: str = "ucd", model: str | None = None, data: str | None = None, address: str | None = None
) -> dict[str, Any]:
    """Switch a running application to another model (default: its URI again, e.g. a moved alias).

    Redeploys with the running settings; old replicas answer until the new ones are ready, and
    a model that cannot be resolved fails here, before anything is replaced. Returns the model
    answering before and after.
    """
    _connect_running(address)
    handle = serve.get_app_handle(name)
    current = handle.describe.remote().result()
    settings = dict(current["settings"])
    if model:
        settings["model"] = model
    if data:
        settings["data"] = data
    new = serve_app.deploy(ServeConfig.model_validate(settings))
    after = new.describe.remote().result()
    return {"before": current["model"], "after": after["model"]}


def status(name: str = "ucd", address: str | None = None) -> dict[str, Any]:
    """The application's status, settings, model and the answering replica's batch statistics."""
    _connect_running(address)
    st = serve.status()
    app = st.applications.get(name)
    if app is None:
        raise UcdError(f"no Serve application named {name!r} (running: {sorted(st.applications)})")
    out: dict[str, Any] = {"app": name, "status": getattr(app.status, "value", str(app.status))}
    handle = serve.get_app_handle(name)
    out.update(handle.describe.remote().result())
    out["stats"] = handle.get_stats.remote().result()
    return out


def stop(name: str = "ucd", address: str | None = None) -> None:
    """Delete the application (the Ray cluster and Serve itself keep running)."""
    _connect_running(address)
    serve.delete(name)
