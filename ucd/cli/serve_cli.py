"""``ucd serve``: start the Ray Serve application, reload its model, show its status, stop it.

Only argument parsing and printing here; the Ray side is :mod:`ucd.pipelines.serve_control`,
imported when a sub-command runs so that ``ucd --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import sys


def load_serve_config(args: argparse.Namespace):
    """--config file <- --set overrides <- the explicit flags (kept as given, not parsed as YAML)."""
    from ucd.config import apply_overrides, build_config, load_yaml
    from ucd.serving.settings import ServeConfig

    data = load_yaml(args.config) if args.config else {}
    data = apply_overrides(data, args.set)
    for key in ("model", "data", "name", "host", "port"):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    return build_config(ServeConfig, base=data)


def _start(args: argparse.Namespace) -> int:
    cfg = load_serve_config(args)
    from ucd.pipelines import serve_control

    summary, started = serve_control.start(cfg, args.address, args.num_cpus, args.dashboard)
    print(json.dumps(summary, indent=2), flush=True)
    if not (started or args.block):
        return 0  # the application lives on in the cluster
    print("serving; Ctrl-C stops", flush=True)
    serve_control.serve_until_signalled()
    return 0


def _model_label(m: dict) -> str:
    return f"{m.get('resolved_uri')} (version {m.get('version')})"


def _reload(args: argparse.Namespace) -> int:
    from ucd.pipelines import serve_control

    res = serve_control.reload(args.name, args.model, args.data, args.address)
    before, after = res["before"] or {}, res["after"] or {}
    print(json.dumps(res, indent=2))
    if before.get("resolved_uri") == after.get("resolved_uri") and args.model is None:
        print(f"still serving {_model_label(after)}: the URI resolves to the same model", file=sys.stderr)
    else:
        print(f"now serving {_model_label(after)}, was {_model_label(before)}", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    from ucd.pipelines import serve_control

    print(json.dumps(serve_control.status(args.name, args.address), indent=2, default=str))
    return 0


def _stop(args: argparse.Namespace) -> int:
    from ucd.pipelines import serve_control

    serve_control.stop(args.name, args.address)
    print(f"deleted Serve application {args.name!r}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="online recommendations with Ray Serve (HTTP + handles)")
    ssub = p.add_subparsers(dest="serve_cmd", required=True)

    q = ssub.add_parser("start", help="deploy the application (starts a local Ray unless --address)")
    q.add_argument("--model", help="model folder or MLflow URI, e.g. models:/ucd-student@production")
    q.add_argument("--data", help="prepared dataset folder: enables requests by user_id")
    q.add_argument("--config", help="YAML ServeConfig (settings: docs/serving.md)")
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
