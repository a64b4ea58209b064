"""What a job prints: its own lines on the console, Ray/vLLM/MLflow output in a log file.

Workers (the LLM engine, the embedder, Ray Data's actors, Ray Train's workers and controller)
and the libraries in the driver (Ray, Ray Data, vLLM, MLflow) print start-up chatter,
deprecation warnings and per-batch or per-report lines that a user cannot act on. While a job
runs they go to its log file (the profile job: ``<out>/logs/profile.log``; training:
``$UCD_HOME/logs/<ray run name>.log``) with the job's own lines; the console keeps the job's
lines (a worker's own progress lines among them) and library errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ucd.profiles.config import RayConfig

# Loggers whose records below ERROR go to the log file only.
_LIBRARY_LOGGERS = (
    "ray",
    "ray.data",
    "ray.llm",
    "vllm",
    "mlflow",
    "alembic",
    "transformers",
    "sentence_transformers",
    "py.warnings",
)
_WORKER_HANDLER = "ucd_profile_log"
_AUTOSCALER_EVENT = ":event_summary:"


def ensure_ray(cfg: RayConfig, log: Callable[[str], None] = print) -> bool:
    """Connect to ``ray.address`` / $RAY_ADDRESS (jobs), else start a local instance.

    Returns True when this call started Ray (the caller then shuts it down).
    """
    import ray

    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
        log(f"[profile] connected to Ray at {address}")
        return True
    ray.init(
        num_cpus=cfg.num_cpus,
        object_store_memory=cfg.object_store_memory,
        include_dashboard=cfg.include_dashboard,
        log_to_driver=True,
    )
    log("[profile] started a local Ray instance")
    return True


class JobConsole:
    """The job's log function (console and file) and the quieting of the libraries' loggers."""

    def __init__(self, f: IO[str], log: Callable[[str], None]):
        self.f, self._log = f, log
        self.handler = logging.StreamHandler(f)
        self.handler.setLevel(logging.INFO)  # Ray Data logs every scheduling step at DEBUG
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._levels: dict[logging.Handler, int] = {}
        self._propagate: dict[logging.Logger, bool] = {}

    def log(self, line: str) -> None:
        self._log(line)
        self.f.write(line + "\n")

    def quiet_libraries(self) -> None:
        """Library records below ERROR to the file only. Idempotent: libraries set their
        console handlers up when first imported (Ray, Ray Data, vLLM), so it runs again then."""
        for name in _LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            for h in logger.handlers:
                if self._is_console(h) and h not in self._levels:
                    self._levels[h] = h.level
                    h.setLevel(max(h.level, logging.ERROR))
            if logger not in self._propagate:
                # Records of a logger without handlers of its own would reach the root's console.
                self._propagate[logger] = logger.propagate
                logger.propagate = False
                logger.addHandler(self.handler)

    def _is_console(self, h: logging.Handler) -> bool:
        return (
            isinstance(h, logging.StreamHandler)
            and not isinstance(h, logging.FileHandler)
            and h is not self.handler
        )

    def restore(self) -> None:
        for logger, propagate in self._propagate.items():
            logger.removeHandler(self.handler)
            logger.propagate = propagate
        for h, level in self._levels.items():
            h.setLevel(level)


@contextlib.contextmanager
def job_console(path: Path, log: Callable[[str], None]) -> Iterator[JobConsole]:
    """Library logs and Python warnings into ``path`` while the block runs; the yielded
    console's ``log`` writes the job's lines to both. Worker output follows once Ray is up:
    :func:`route_worker_output`."""
    import mlflow  # noqa: F401  (these set up their console handlers on import: quieted below)
    import ray.data  # noqa: F401

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1, encoding="utf-8") as f:
        console = JobConsole(f, log)
        console.quiet_libraries()
        logging.captureWarnings(True)
        # MLflow draws a progress bar on stderr for every artifact it copies: no logger to quiet.
        bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        try:
            yield console
        finally:
            logging.captureWarnings(False)
            console.restore()
            if bar is None:
                os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
            else:
                os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = bar


def route_worker_output(path: Path, passthrough: str | None = None) -> Callable[[], None]:
    """Worker stdout/stderr (which Ray forwards to the driver) into ``path``; returns the undo.
    Lines that start with ``passthrough`` (a job's own progress lines printed by a worker, such
    as ``[train]``) reach the console too.

    Ray offers no public switch for this once it is connected (``log_to_driver`` is fixed at
    ``ray.init``, and a caller's Ray may have it on), so the forwarding handler is swapped.
    """
    import ray

    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # another Ray layout: its output stays on the console
        return lambda: None
    f = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115  (closed by the undo)
    before = list(dispatcher.handlers)

    def to_file(data: dict) -> None:
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # its status table every few seconds; events only
            lines = [ln.split(_AUTOSCALER_EVENT, 1)[1] for ln in lines if _AUTOSCALER_EVENT in ln]
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who} pid={data.get('pid')}) "
        f.write("".join(prefix + line + "\n" for line in lines))
        for line in lines:
            # Ray Train hands a worker's stdout to the driver twice (its own capture and
            # the plain stream): a progress line is shown once.
            if passthrough and line.startswith(passthrough) and line != shown[-1]:
                shown.append(line)
                print(line, flush=True)

    shown = [""]
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler(_WORKER_HANDLER, to_file)

    def restore() -> None:
        dispatcher.remove_handler(_WORKER_HANDLER)
        printing = [p for p in before if p[0] == "ray_print_logs"]
        if printing and ray.is_initialized():
            dispatcher.add_handler(*printing[0])
        f.close()

    return restore


def absorb_actor_restart_warning(path: Path) -> None:
    """Ray's core prints on stderr, once per process, that an actor whose constructor
    arguments hold object refs may fail to restart. Every Ray Data actor pool has such
    arguments (kept alive by Ray Data while it runs), so the first round printed it on the
    console; a throwaway actor with such an argument is created here with stderr pointing at
    the log file instead."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=1)
    class RestartWarningProbe:
        def __init__(self, refs: list):
            pass

    ref = ray.put(0)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "a", encoding="utf-8") as f:
            os.dup2(f.fileno(), 2)
            try:
                probe = RestartWarningProbe.remote([ref])
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)
    ray.kill(probe)
