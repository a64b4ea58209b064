"""Per-replica counters of the serving application: requests, batch sizes, model time."""

from __future__ import annotations

from typing import Any


class BatchStats:
    """Counts of requests and batch sizes, for ``/stats`` and the load tests."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.batches = 0
        self.sizes: dict[int, int] = {}
        self.busy_s = 0.0
        self.errors_4xx = 0

    def record(self, size: int, seconds: float) -> None:
        self.requests += size
        self.batches += 1
        self.sizes[size] = self.sizes.get(size, 0) + 1
        self.busy_s += seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "mean_batch_size": self.requests / self.batches if self.batches else 0.0,
            "max_batch_size_seen": max(self.sizes, default=0),
            "batch_size_histogram": {str(k): v for k, v in sorted(self.sizes.items())},
            "model_seconds": round(self.busy_s, 4),
            "rejected_requests": self.errors_4xx,
        }
