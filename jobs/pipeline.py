"""Entry point for `ray job submit -- python jobs/pipeline.py [--full] [--out DIR] [--set k=v ...]`:
the quickstart pipeline (prepare, profiles, baseline and distilled training, comparison), on a
seeded share of the users unless --full."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ucd.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["quickstart", *sys.argv[1:]]))
