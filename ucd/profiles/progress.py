"""Progress while the job runs: users done / total, tokens/s, ETA (log lines + progress.json).

A user is *done* once their answer is settled (ok, or flagged after the last retry), so with
retries on, the first round settles few users; the round's own count (users answered in this
round) and its ETA are what show the job moving.

The ETAs divide the answers still expected by the answer rate over a window of recent
answers (:class:`AnswerRate`), and say "unknown" until that window holds enough answers over
enough seconds. A rate since the job's start would count the engine start-up as work and,
once the first user is done, extrapolate from them alone (2h19m printed for a 50-user run
that had minutes left). The answers still expected (:func:`answers_left`) include the retry
rounds: only the share of answers flagged so far is asked again, not every user.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ucd.schema import atomic_write_text


def _fmt_eta(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "unknown"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class AnswerRate:
    """Answers per second over the last ``window_s`` seconds, or None while too few are in.

    The window opens at its first arrival and that arrival's answers are not counted: they
    measure the wait before anything came back (start-up, the first batch's latency), not the
    pace. A known rate needs ``min_answers`` answers after it, ``min_span_s`` seconds later.
    """

    def __init__(self, window_s: float = 180.0, min_answers: int = 8, min_span_s: float = 10.0):
        self.window_s, self.min_answers, self.min_span_s = window_s, min_answers, min_span_s
        self.arrivals: deque[tuple[float, int]] = deque()

    def add(self, now: float, answers: int) -> None:
        if answers > 0:
            self.arrivals.append((now, answers))

    def per_s(self, now: float) -> float | None:
        while len(self.arrivals) > 1 and self.arrivals[0][0] < now - self.window_s:
            self.arrivals.popleft()
        if not self.arrivals:
            return None
        t_open = self.arrivals[0][0]
        after = sum(n for _, n in self.arrivals) - self.arrivals[0][1]
        span = now - t_open
        if after < self.min_answers or span < self.min_span_s:
            return None
        return after / span


def answers_left(unanswered: int, awaiting_retry: int, flagged_share: float, retry_rounds: int) -> float:
    """Final answers still expected.

    ``unanswered`` users of the current round answer once, and a ``flagged_share`` of answers
    is asked again while retries remain (``retry_rounds`` after this round): 1 + p + ... + p^r
    answers each. Users answered and flagged in this round (``awaiting_retry``) need the
    retries only: p^0 + ... + p^(r-1).
    """

    def chain(rounds: int) -> float:
        return sum(flagged_share**k for k in range(max(rounds, -1) + 1))

    return unanswered * chain(retry_rounds) + awaiting_retry * chain(retry_rounds - 1)


class Progress:
    def __init__(
        self,
        total: int,
        done: int,
        path: Path | None,
        log: Callable[[str], None],
        every_s: float = 10.0,
        *,
        retries: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.done0, self.done = total, done, done
        self.prompt_tokens = self.output_tokens = self.requests = 0
        self.answers = self.flagged = 0
        self.clock, self.retries = clock, retries
        self.t0 = clock()
        self.path, self.log, self.every_s = path, log, every_s
        self._last, self._unreported = 0.0, False
        self.round = self.round_users = self.round_answered = self.round_settled = 0
        self.round_t0 = self.t0
        self.rate = AnswerRate()

    def start_round(self, n_users: int) -> None:
        self.round += 1
        self.round_users, self.round_answered, self.round_settled = n_users, 0, 0
        self.round_t0 = self.clock()
        # A round's first results wait for its actors (and, in the first round, the engine)
        # to start: say at once that it began, and replace a previous run's progress.json.
        self.report()

    def update(
        self,
        users_finished: int,
        users_answered: int,
        requests: int,
        prompt_tokens: int,
        output_tokens: int,
        users_flagged: int = 0,
    ) -> None:
        """One result batch: users settled, final answers (of which flagged), requests, tokens."""
        self.done += users_finished
        self.round_answered += users_answered
        self.round_settled += users_finished
        self.answers += users_answered
        self.flagged += users_flagged
        self.requests += requests
        self.prompt_tokens += prompt_tokens
        self.output_tokens += output_tokens
        self.rate.add(self.clock(), users_answered)
        self._unreported = True
        if self.clock() - self._last >= self.every_s:
            self.report()

    def _etas(self, now: float) -> tuple[float | None, float | None]:
        """Seconds left in this round and in the job, None while the answer rate is unknown."""
        rate = self.rate.per_s(now)
        if not rate:
            return None, None
        unanswered = self.round_users - self.round_answered
        left = answers_left(
            unanswered,
            self.round_answered - self.round_settled,
            self.flagged / max(self.answers, 1),
            max(0, self.retries - (self.round - 1)),
        )
        return round(unanswered / rate, 1), round(left / rate, 1)

    def snapshot(self) -> dict:
        now = self.clock()
        el = max(now - self.t0, 1e-9)
        round_eta, eta = self._etas(now)
        return {
            "round": self.round,
            "round_users": self.round_users,
            "round_answered": self.round_answered,
            "round_eta_s": round_eta,
            "users_done": self.done,
            "users_total": self.total,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "elapsed_s": round(el, 1),
            "users_per_s": round((self.done - self.done0) / el, 4),
            "prompt_tokens_per_s": round(self.prompt_tokens / el, 1),
            "output_tokens_per_s": round(self.output_tokens / el, 1),
            "eta_s": eta,
        }

    def flush(self) -> dict:
        """At a round's end: a progress line if results came in since the last one, and
        progress.json either way."""
        return self.report() if self._unreported else self.save()

    def save(self) -> dict:
        """progress.json only (the console has the round's closing line already)."""
        s = self.snapshot()
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(s))
        return s

    def report(self) -> dict:
        """A progress line on the console, and progress.json."""
        self._last, self._unreported = self.clock(), False
        s = self.save()
        pct = 100.0 * s["users_done"] / max(s["users_total"], 1)
        self.log(
            f"[profile] users done {s['users_done']}/{s['users_total']} ({pct:.1f}%) | "
            f"round {s['round']}: {s['round_answered']}/{s['round_users']} answered, "
            f"ETA {_fmt_eta(s['round_eta_s'])} | "
            f"prompt {s['prompt_tokens_per_s']:.0f} tok/s | output {s['output_tokens_per_s']:.0f} tok/s | "
            f"overall ETA {_fmt_eta(s['eta_s'])}"
        )
        return s
