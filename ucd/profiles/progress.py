"""Progress while the job runs: users done / total, tokens/s, ETA (log lines + progress.json).

A user is *done* once their answer is settled (ok, or flagged after the last retry), so with
retries on, the first round settles few users; the round's own count (users answered in this
round) and its ETA are what show the job moving.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ucd.schema import atomic_write_text


def _fmt_eta(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(
        self, total: int, done: int, path: Path | None, log: Callable[[str], None], every_s: float = 10.0
    ):
        self.total, self.done0, self.done = total, done, done
        self.prompt_tokens = self.output_tokens = self.requests = 0
        self.t0 = time.monotonic()
        self.path, self.log, self.every_s = path, log, every_s
        self._last = 0.0
        self.round = self.round_users = self.round_answered = 0
        self.round_t0 = self.t0

    def start_round(self, n_users: int) -> None:
        self.round += 1
        self.round_users, self.round_answered = n_users, 0
        self.round_t0 = time.monotonic()
        # A round's first results wait for its actors and engine to start (minutes for a large
        # model): say at once that it began, and replace a previous run's progress.json.
        self.report()

    def update(
        self, users_finished: int, users_answered: int, requests: int, prompt_tokens: int, output_tokens: int
    ) -> None:
        self.done += users_finished
        self.round_answered += users_answered
        self.requests += requests
        self.prompt_tokens += prompt_tokens
        self.output_tokens += output_tokens
        if time.monotonic() - self._last >= self.every_s:
            self.report()

    def snapshot(self) -> dict:
        el = max(time.monotonic() - self.t0, 1e-9)
        new = self.done - self.done0
        rate = new / el
        left = self.total - self.done
        round_rate = self.round_answered / max(time.monotonic() - self.round_t0, 1e-9)
        round_left = self.round_users - self.round_answered
        return {
            "round": self.round,
            "round_users": self.round_users,
            "round_answered": self.round_answered,
            "round_eta_s": round(round_left / round_rate, 1) if round_rate > 0 else None,
            "users_done": self.done,
            "users_total": self.total,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "elapsed_s": round(el, 1),
            "users_per_s": round(rate, 4),
            "prompt_tokens_per_s": round(self.prompt_tokens / el, 1),
            "output_tokens_per_s": round(self.output_tokens / el, 1),
            "eta_s": round(left / rate, 1) if rate > 0 else None,
        }

    def report(self) -> dict:
        self._last = time.monotonic()
        s = self.snapshot()
        pct = 100.0 * s["users_done"] / max(s["users_total"], 1)
        eta = s["eta_s"] if s["eta_s"] is not None else float("inf")
        round_eta = s["round_eta_s"] if s["round_eta_s"] is not None else float("inf")
        self.log(
            f"[profile] users done {s['users_done']}/{s['users_total']} ({pct:.1f}%) | "
            f"round {s['round']}: {s['round_answered']}/{s['round_users']} answered, ETA {_fmt_eta(round_eta)} | "
            f"{s['users_per_s']:.2f} users/s | prompt {s['prompt_tokens_per_s']:.0f} tok/s | "
            f"output {s['output_tokens_per_s']:.0f} tok/s | overall ETA {_fmt_eta(eta)}"
        )
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(s))
        return s
