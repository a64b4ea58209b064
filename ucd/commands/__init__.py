"""CLI sub-commands: each module exposes ``register(subparsers)``; cli.py lists them."""
