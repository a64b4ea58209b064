"""``pip install .`` (not editable) into a fresh venv, then ``ucd quickstart`` from a folder
outside the clone: the shipped configs, the profile job, training, the registry and the Ray Serve
app all come from the installed package, not from the checkout."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_venv(where: Path) -> Path:
    """A new venv whose third-party packages are the dev venv's (a path entry, so the dev venv's
    editable-install hook is not run there) and whose ``ucd`` is a wheel built from the clone."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    py = where / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "zz-dev-venv-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    build = where.parent / "src"
    shutil.copytree(
        ROOT, build, ignore=shutil.ignore_patterns(".venv", ".git", "out", "experiments", "tests")
    )
    # The wheel is built by the dev venv (its setuptools builds wheels) and installed as a user
    # would install a release: a plain, not editable, install of the wheel file.
    dist = where.parent / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(build),
        ],
        check=True,
        timeout=600,
    )
    wheel = next(dist.glob("ucd-*.whl"))
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=600)
    shutil.rmtree(build)  # nothing of the sources is left to import from
    return where


@pytest.mark.slow
def test_a_non_editable_install_runs_the_quickstart_outside_the_clone(tmp_path, data_dir):
    venv = _fresh_venv(tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        **os.environ,
        "UCD_DATA_DIR": str(data_dir),
        "UCD_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}",
        "PYTHONPATH": "",
    }
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import ucd, ucd.pipelines.serve_app; print(ucd.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0, where.stderr[-3000:]
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the installed copy
    run = subprocess.run(
        [
            venv / "bin" / "ucd",
            "quickstart",
            "--set",
            "profile_overrides=[limit_users=20]",
            "--set",
            "train_overrides=[epochs=2]",
            "--set",
            f"serve_port={_free_port()}",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert (elsewhere / "out" / "quickstart" / "comparison.md").is_file(), out[-3000:]
    assert re.search(r"POST http://127\.0\.0\.1:\d+/recommend .* -> model version \d+", out), out[-3000:]
