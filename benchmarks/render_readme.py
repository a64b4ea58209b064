"""Put the quality benchmark's Markdown (generated from its JSON) into README.md's Results section.

    .venv/bin/python benchmarks/render_readme.py [--md benchmarks/results/quality/quality.md]

The section lives between the markers below; everything else in README.md is left as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"


def render(readme: str, body: str) -> str:
    block = f"{START}\n{body.strip()}\n{END}"
    if START in readme and END in readme:
        head, rest = readme.split(START, 1)
        return head + block + rest.split(END, 1)[1]
    return readme.rstrip() + "\n\n## Results\n\n" + block + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--md", default="benchmarks/results/quality/quality.md")
    ap.add_argument("--readme", default="README.md")
    args = ap.parse_args()
    md = Path(args.md)
    if not md.exists():
        raise SystemExit(f"{md} not found: run benchmarks/quality.py first")
    readme = Path(args.readme)
    readme.write_text(render(readme.read_text(), md.read_text()))
    print(f"updated {readme} from {md}")


if __name__ == "__main__":
    main()
