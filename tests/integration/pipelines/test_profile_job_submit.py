"""`ray job submit --working-dir . -- python jobs/profile.py ...` against a real local head."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from profile_helpers import smollm2

from ucd.schema import read_meta, read_table

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Until ``url`` answers; TimeoutError after ``timeout`` s, or as soon as ``proc`` has exited
    (a head that failed at start never answers: waiting on would cost minutes per try)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (401 without a token): it is up
        except OSError:
            time.sleep(1)
    raise TimeoutError(url)


def _ray_job(cmd: list[str], verb: str, job: str, env: dict, timeout: float):
    """`ray job <verb> <job>` with the ray binary and head address of the submit command ``cmd``."""
    address = cmd[cmd.index("--address") + 1]
    args = [cmd[0], "job", verb, "--address", address, *(["--follow"] if verb == "logs" else []), job]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _job_landed(cmd: list[str], job: str, env: dict, deadline: float) -> bool | None:
    """Whether the head holds the submission: True, False (it answered 404), or None (it never
    answered before the deadline; a dashboard that drops one request may drop the next few)."""
    while time.monotonic() < deadline:
        r = _ray_job(cmd, "status", job, env, 120)
        if r.returncode == 0:
            return True
        if "status code 404" in r.stdout + r.stderr:
            return False
        time.sleep(5)
    return None


def _follow(cmd: list[str], job: str, env: dict, deadline: float) -> subprocess.CompletedProcess:
    """What a waiting `ray job submit` would have printed for a job that landed: its logs to the
    end, then its final status (exit status 0 only if it succeeded)."""
    logs = _ray_job(cmd, "logs", job, env, max(deadline - time.monotonic(), 60))
    status = _ray_job(cmd, "status", job, env, 120)
    ok = f"Job '{job}' succeeded" in status.stdout + status.stderr
    return subprocess.CompletedProcess(
        cmd, 0 if ok else 1, logs.stdout + status.stdout, logs.stderr + status.stderr
    )


def _submit(
    cmd: list[str], job: str, env: dict, timeout: float, head: subprocess.Popen
) -> subprocess.CompletedProcess:
    """The job agent registers a little after the dashboard answers: retry until it does.

    On 2 cores shared with two or three trainings the dashboard also dropped the submit request
    unanswered ("Connection aborted"), whether or not the job had landed. The submission gets
    its own id so the head can say which: a job that landed is followed to its end, never run
    twice; one that did not is submitted again.
    """
    deadline = time.monotonic() + timeout
    at = cmd.index("submit") + 1
    cmd = [*cmd[:at], "--submission-id", job, *cmd[at:]]
    while True:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        said = r.stderr + r.stdout
        busy = "No available agent" in said or "Failed to connect" in said
        if "Connection aborted" in said:
            landed = _job_landed(cmd, job, env, deadline)
            if landed:
                followed = _follow(cmd, job, env, deadline)
                followed.stderr = said + followed.stderr
                return followed
            busy = landed is False
        if not busy or time.monotonic() > deadline or head.poll() is not None:
            return r
        time.sleep(3)


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str):
    """Seconds spent in the block, kept under ``name`` even when it raises."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        phases[name] = time.monotonic() - t0


DASHBOARD_STARTUP_S = 240


def _start_head(bin_dir: Path, env: dict, log_path: Path, tries: int = 3):
    """A local head with a dashboard, on free ports. On a loaded machine `ray start --block`
    sometimes kills the head seconds after the dashboard answers (its client server timed out
    waiting for node info, seen while CI shared 2 cores with a profile job): start it again."""
    for attempt in range(tries):
        gcs, dash, agent, metrics, client = (_free_port() for _ in range(5))
        # A short temp dir: Ray's socket paths must stay under the OS limit.
        temp = tempfile.mkdtemp(prefix="ucdray", dir="/tmp")
        log = open(log_path, "a")  # noqa: SIM115  (closed by the caller, after the head)
        head = subprocess.Popen(
            [
                str(bin_dir / "ray"),
                "start",
                "--head",
                "--block",
                f"--port={gcs}",
                f"--dashboard-port={dash}",
                # Other Ray instances on the machine hold the default agent/metrics/client ports.
                f"--dashboard-agent-listen-port={agent}",
                f"--metrics-export-port={metrics}",
                f"--ray-client-server-port={client}",
                "--num-cpus=2",
                "--object-store-memory=400000000",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--temp-dir={temp}",
                "--disable-usage-stats",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_http(
                f"http://127.0.0.1:{dash}/api/version",
                DASHBOARD_STARTUP_S + 60,
                proc=head,
            )
            time.sleep(5)  # the block loop reports a dead subprocess about a second later
            up = head.poll() is None
        except TimeoutError:
            # Not up, even if the process still lives: seen under load, Ray gave up on its
            # dashboard after 97 s and the head was still shutting down when this timed out.
            up = False
        if up:
            return head, dash, temp, log
        print(f"the Ray head did not stay up (try {attempt + 1} of {tries})")
        _stop_group(head)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
    raise AssertionError(f"the Ray head did not stay up ({tries} tries):\n{log_path.read_text()[-3000:]}")


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop only what this test started: the head's own process group. A graceful `ray start
    --block` shutdown took 36 s here, for a throwaway head whose state nobody reads again, so
    it gets a few seconds before the group is killed."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(8)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of a slow shutdown


@pytest.mark.slow
def test_ray_job_submit_runs_the_profile_job(ml100k_loo, tmp_path):
    model = smollm2()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Token auth on both sides, explicitly (the CLI client does not assume it), with a token of
    # this test's own: `ray start` does not create one, and a fresh machine has no
    # ~/.ray/auth_token (only a local `ray.init()` writes it), so the head refused to start.
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
    )
    # Ray gives its dashboard 60 s to start; on 2 loaded cores (CI beside three trainings) the
    # dashboard process had not even opened its log by then, three starts in a row.
    env["RAY_DASHBOARD_STARTUP_TIMEOUT_S"] = str(DASHBOARD_STARTUP_S)
    phases: dict[str, float] = {}
    with _timed(phases, "head"):
        head, dash, temp, log = _start_head(bin_dir, env, tmp_path / "head.log")
    out = tmp_path / "out"
    try:
        # What users run: `ray job submit` with the repo as working dir, against the head.
        submit = [str(bin_dir / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}"]
        submit += ["--working-dir", ".", "--", "python"]
        cmd = [
            *submit,
            "jobs/profile.py",
            "--data",
            str(ml100k_loo),
            "--out",
            str(out),
            "--set",
            f"llm.model={model}",
            "--set",
            "llm.backend=hf",
            "--set",
            "limit_users=3",
            "--set",
            "prompt.max_items=4",
            "--set",
            "sampling.max_tokens=12",
            "--set",
            "checks.retries=0",
            "--set",
            "checks.min_chars=5",
            "--set",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ]
        profile_job = f"ucd-test-profile-{os.getpid()}"
        with _timed(phases, "profile job"):
            r = _submit(cmd, profile_job, env, 480, head)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "succeeded" in r.stdout + r.stderr
        assert "connected to Ray at" in r.stdout  # it ran on the submitted-to cluster
        # Then the training job on the same head, distilling from the profiles just written.
        train = [
            *submit,
            "jobs/train.py",
            "--config",
            "ml-100k-sasrec",
            "--data",
            str(ml100k_loo),
            "--profiles",
            str(out),
            "--set",
            "epochs=2",
            "--set",
            "ray.num_workers=1",
            "--set",
            "model.max_len=20",
            "--set",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "--set",
            f"ray.storage_path={tmp_path / 'ray'}",
            "--set",
            f"output={tmp_path / 'model'}",
        ]
        with _timed(phases, "train job"):
            r = _submit(train, f"ucd-test-train-{os.getpid()}", env, 480, head)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "succeeded" in r.stdout + r.stderr
        # The path an aborted submit takes, against this real head: an id it never got is told
        # apart from one it holds, and following a landed job yields what the waiting submit shows.
        with _timed(phases, "status checks"):
            soon = time.monotonic() + 240
            assert _job_landed(submit, "ucd-test-never-submitted", env, soon) is False
            assert _job_landed(submit, profile_job, env, soon) is True
            followed = _follow(submit, profile_job, env, soon)
        assert followed.returncode == 0, followed.stdout[-3000:] + followed.stderr[-3000:]
        assert "connected to Ray at" in followed.stdout
    finally:
        with _timed(phases, "head stop"):
            _stop_group(head)
            log.close()
            shutil.rmtree(temp, ignore_errors=True)
        print("phases (s):", {k: round(v, 1) for k, v in phases.items()})

    prof = read_table(out / "profiles.parquet", "profiles")
    assert prof.column("user_id").to_pylist() == [1, 2, 3]
    assert read_meta(out / "profiles.parquet")["backend"] == "hf"
    assert (out / "profile_embeddings.parquet").exists()

    # The training job's outputs: the model folder, and an MLflow run per job with the registry entry.
    assert (tmp_path / "model" / "model.json").exists()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {
        r.data.tags.get("mlflow.runName"): r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
    }
    assert "profile-ml-100k" in runs
    train_run = runs["ml-100k-sasrec-distill-cosine-s42"]
    assert train_run.info.status == "FINISHED"
    assert 0 < train_run.data.metrics["test_ndcg_at_10"] < 1
    assert [m.step for m in client.get_metric_history(train_run.info.run_id, "val_ndcg_at_10")] == [0, 1]
    assert client.get_model_version_by_alias("ucd-student", "candidate").run_id == train_run.info.run_id
