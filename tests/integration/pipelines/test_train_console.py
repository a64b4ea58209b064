"""``ucd train`` as a user runs it: the console shows the project's progress lines, and Ray Train's
own per-report output lands in the run's log file instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_training_console_shows_progress_and_sends_ray_output_to_the_log(ml100k_loo, tmp_path):
    env = {**os.environ, "UCD_HOME": str(tmp_path / "home")}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "ucd.cli", "train", "--config", "ml-100k-sasrec", "--data", str(ml100k_loo)]
    cmd += ["--set", "epochs=2", "--set", "ray.num_workers=1", "--set", "registry.enabled=false"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    console = run.stdout + run.stderr
    first = re.findall(r"^\[train\] epoch 1/2 .*ETA <= \d+m\d\ds$", run.stdout, re.M)
    assert len(first) == 1, console[-3000:]  # shown live, once
    assert re.search(r"^\[train\] epoch 2/2 .* done$", run.stdout, re.M), console[-3000:]
    log = re.search(r"output of this run: (\S+\.log)", run.stdout)
    assert log, console[-3000:]
    text = Path(log.group(1)).read_text()
    for noise in ("Reporting training result", "RayTrainWorker", "Checkpoint successfully created"):
        assert noise not in console, f"{noise!r} reached the console"
    assert "Reporting training result" in text  # ... it went to the log file
