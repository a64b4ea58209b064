"""The ``ucd`` command. Each sub-command lives in ``ucd/cli/<name>_cli.py``, which exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ucd import __version__
from ucd.errors import UcdError

COMMANDS = ["data", "profile", "train", "serve", "quickstart"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ucd", description="User-centric LLM distillation for sequential recommenders, on Ray."
    )
    parser.add_argument("--version", action="version", version=f"ucd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"ucd.cli.{name}_cli").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UcdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
