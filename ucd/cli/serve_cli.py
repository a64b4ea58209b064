"""``ucd serve``: start the Ray Serve application, reload its model, show its status, stop it."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def serve_app_module() -> ModuleType:
    """``serve/app.py`` of this repository, importable from any working directory."""
    try:
        mod = importlib.import_module("serve.app")
    except ModuleNotFoundError:
        mod = None
    if mod is None or not hasattr(mod, "build_app"):
        if not (ROOT / "serve" / "app.py").exists():
            from ucd.errors import ConfigError

            raise ConfigError(f"serve/app.py not found under {ROOT}: run ucd from its repository checkout")
        sys.path.insert(0, str(ROOT))
        sys.modules.pop("serve", None)
        mod = importlib.import_module("serve.app")
    return mod


def connect(address: str | None, num_cpus: int | None = None, dashboard: bool = False) -> bool:
    """Join a Ray cluster, or start a local one when ``address`` is None; True if started here.

    Replicas import ``serve.app`` by name, so the package travels with the job (py_modules):
    this also works on a remote cluster that only has ucd installed.
    """
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"py_modules": [str(ROOT / "serve")]}
    if address:
        ray.init(address=address, runtime_env=runtime_env)
        return False
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, runtime_env=runtime_env)
    return True


def load_serve_config(args: argparse.Namespace):
    """--config file <- --set overrides <- the explicit flags (kept as given, not parsed as YAML)."""
    from ucd.config import apply_overrides, build_config, load_yaml
    from ucd.serving import ServeConfig

    data = load_yaml(args.config) if args.config else {}
    data = apply_overrides(data, args.set)
    for key in ("model", "data", "name", "host", "port"):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    return build_config(ServeConfig, base=data)


def _start(args: argparse.Namespace) -> int:
    cfg = load_serve_config(args)
    serve_app = serve_app_module()
    started = connect(args.address or os.environ.get("RAY_ADDRESS"), args.num_cpus, args.dashboard)
    from ray import serve

    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    handle = serve_app.deploy(cfg)
    info = handle.describe.remote().result()
    prefix = cfg.route_prefix.rstrip("/")
    url = f"http://{cfg.host}:{cfg.port}{prefix}"
    print(
        json.dumps(
            {"app": cfg.name, "url": f"{url}/recommend", "docs": f"{url}/docs", "model": info["model"]},
            indent=2,
        ),
        flush=True,
    )
    if not (started or args.block):
        return 0  # the application lives on in the cluster
    print("serving; Ctrl-C stops", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    serve.shutdown()
    return 0


def _reload(args: argparse.Namespace) -> int:
    serve_app = serve_app_module()
    connect(args.address or os.environ.get("RAY_ADDRESS") or "auto")
    res = serve_app.reload(args.name, args.model, args.data)
    before, after = res["before"] or {}, res["after"] or {}
    print(json.dumps(res, indent=2))

    def label(m: dict) -> str:
        return f"{m.get('resolved_uri')} (version {m.get('version')})"

    if before.get("resolved_uri") == after.get("resolved_uri") and args.model is None:
        print(f"still serving {label(after)}: the URI resolves to the same model", file=sys.stderr)
    else:
        print(f"now serving {label(after)}, was {label(before)}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    connect(args.address or os.environ.get("RAY_ADDRESS") or "auto")
    from ray import serve

    st = serve.status()
    app = st.applications.get(args.name)
    if app is None:
        from ucd.errors import UcdError

        raise UcdError(f"no Serve application named {args.name!r} (running: {sorted(st.applications)})")
    out = {"app": args.name, "status": getattr(app.status, "value", str(app.status))}
    handle = serve.get_app_handle(args.name)
    out.update(handle.describe.remote().result())
    out["stats"] = handle.get_stats.remote().result()
    print(json.dumps(out, indent=2, default=str))
    return 0


def _stop(args: argparse.Namespace) -> int:
    connect(args.address or os.environ.get("RAY_ADDRESS") or "auto")
    from ray import serve

    serve.delete(args.name)
    print(f"deleted Serve application {args.name!r}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="online recommendations with Ray Serve (HTTP + handles)")
    ssub = p.add_subparsers(dest="serve_cmd", required=True)

    q = ssub.add_parser("start", help="deploy the application (starts a local Ray unless --address)")
    q.add_argument("--model", help="model folder or MLflow URI, e.g. models:/ucd-student@production")
    q.add_argument("--data", help="prepared dataset folder: enables requests by user_id")
    q.add_argument("--config", help="YAML ServeConfig (see ucd/serving.py)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. max_batch_size=64")
    q.add_argument("--name", help="Serve application name (default ucd)")
    q.add_argument("--host", help="HTTP host (default 127.0.0.1)")
    q.add_argument("--port", type=int, help="HTTP port (default 8000)")
    q.add_argument("--address", help="Ray cluster to deploy to (default: $RAY_ADDRESS, else a local Ray)")
    q.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    q.add_argument("--dashboard", action="store_true", help="start the Ray dashboard with a local Ray")
    q.add_argument("--block", action="store_true", help="stay in the foreground on a remote cluster too")
    q.set_defaults(func=_start)

    q = ssub.add_parser("reload", help="switch the running application to a (newer) model, no downtime")
    q.add_argument("--model", help="new model URI (default: the running URI again, e.g. a moved alias)")
    q.add_argument("--data", help="new prepared dataset folder for user histories")
    q.add_argument("--name", default="ucd")
    q.add_argument("--address", help="Ray cluster (default: $RAY_ADDRESS, else auto)")
    q.set_defaults(func=_reload)

    q = ssub.add_parser("status", help="application status, model version and batch statistics")
    q.add_argument("--name", default="ucd")
    q.add_argument("--address")
    q.set_defaults(func=_status)

    q = ssub.add_parser("stop", help="delete the application")
    q.add_argument("--name", default="ucd")
    q.add_argument("--address")
    q.set_defaults(func=_stop)
