"""Every command in README.md resolves as written: the files it names exist, and the CLI parses
its sub-commands and flags (nothing is run)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LIMIT = 300


def readme_commands(text: str) -> list[list[str]]:
    """Shell commands of the README's ```bash blocks: continuation lines joined, comments dropped,
    `a && b` split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words:
                    commands.append(words)
    return commands


def run_sh_targets() -> set[str]:
    return set(re.findall(r"^\s+([a-z-]+)\)", (ROOT / "scripts" / "run.sh").read_text(), re.M))


def _flags(words: list[str]) -> list[str]:
    return [w.split("=")[0] for w in words if w.startswith("--")]


def check_ucd(args: list[str]) -> None:
    """``ucd ARGS`` parses, and each --config names a shipped config or a file of the repo."""
    from ucd.cli import build_parser
    from ucd.config import find_config

    build_parser().parse_args(args)
    kind = "profile" if args[0] == "profile" else "train"
    for i, w in enumerate(args[:-1]):
        if w == "--config":
            find_config(kind, ROOT / args[i + 1] if "/" in args[i + 1] else args[i + 1])
        if w in ("data", "prepare") and args[i + 1].endswith(".yaml"):
            assert (ROOT / args[i + 1]).is_file(), f"{args[i + 1]} is not in the repo"


def check_script(path: str, args: list[str]) -> None:
    """A repo script exists, and its --help lists every flag the README gives it."""
    assert (ROOT / path).is_file(), f"{path} is not in the repo"
    if not args:
        return
    out = subprocess.run(
        [sys.executable, str(ROOT / path), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in _flags(args):
        assert flag in out.stdout, f"{path}: {flag} is not one of its options"


JOBS = {"jobs/train.py": "train", "jobs/evaluate.py": "evaluate", "jobs/pipeline.py": "quickstart"}


def check_command(words: list[str]) -> None:
    head = words[0]
    if head == "bash":
        assert words[1] == "scripts/run.sh" and words[2] in run_sh_targets(), words
    elif head.endswith("bin/ucd"):
        check_ucd(words[1:])
    elif head.endswith("bin/python"):
        check_script(words[1], words[2:])
    elif words[:3] == ["ray", "job", "submit"]:
        cmd = words[words.index("--") + 1 :]
        assert cmd[0] == "python" and (ROOT / cmd[1]).is_file(), cmd
        if cmd[1] in JOBS:
            check_ucd([JOBS[cmd[1]], *cmd[2:]])
        else:
            check_script(cmd[1], cmd[2:])
    elif words[:2] == ["ray", "up"]:
        assert (ROOT / words[2]).is_file()
    elif head in ("curl", ".venv/bin/ruff"):
        return  # a running server / a linter: nothing of ours to resolve
    else:
        raise AssertionError(f"README command not understood by this test, teach it: {' '.join(words)}")


def test_readme_is_a_product_document_of_at_most_300_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= LIMIT, f"README.md has {len(lines)} lines (at most {LIMIT})"
    assert "../shared" not in README.read_text().replace("`../shared/data`", "")


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_its_two_commands():
    assert ["bash", "scripts/run.sh", "quickstart"] in COMMANDS
    assert ["bash", "scripts/run.sh", "test"] in COMMANDS


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w)[:70])
def test_readme_command_resolves(words):
    check_command(words)


def test_the_check_catches_a_wrong_flag_and_a_missing_file():
    with pytest.raises(SystemExit):
        check_command([".venv/bin/ucd", "train", "--config", "ml-100k-sasrec", "--no-such-flag"])
    with pytest.raises(AssertionError):
        check_command(["ray", "job", "submit", "--", "python", "jobs/nope.py"])
    from ucd.errors import ConfigError

    with pytest.raises(ConfigError):
        check_command([".venv/bin/ucd", "train", "--config", "no-such-config", "--data", "d"])
