"""Put the quality benchmark's Markdown (generated from its JSON) into README.md's Results section.

    .venv/bin/python benchmarks/render_readme.py [--md benchmarks/results/quality/quality.md] [--name NAME]

The section lives between the markers below (``results:NAME:start`` for a named block, which
must already be in README.md); everything else in README.md is left as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"


def markers(name: str | None) -> tuple[str, str]:
    return (START, END) if not name else (f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->")


def render(readme: str, body: str, name: str | None = None) -> str:
    start, end = markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    if start in readme and end in readme:
        head, rest = readme.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    if name:
        raise SystemExit(f"README has no {start} ... {end} block to fill")
    return readme.rstrip() + "\n\n## Results\n\n" + block + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--md", default="benchmarks/results/quality/quality.md")
    ap.add_argument("--readme", default="README.md")
    ap.add_argument("--name", help="a named block, e.g. qwen")
    args = ap.parse_args()
    md = Path(args.md)
    if not md.exists():
        raise SystemExit(f"{md} not found: run benchmarks/quality.py first")
    readme = Path(args.readme)
    readme.write_text(render(readme.read_text(), md.read_text(), args.name))
    print(f"updated {readme} from {md}")


if __name__ == "__main__":
    main()
