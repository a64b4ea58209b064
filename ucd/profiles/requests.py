"""Which LLM requests a user needs next, given the results already stored.

Each user has a plan (chunking.py) whose keys are run in rounds: a key runs once its
dependencies are *settled* (ok, or out of retries); a bad answer is retried with another seed
while retries remain. Everything here is derived from the stored results, so a rerun after a
crash picks up exactly where the shards stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from ucd.profiles.checks import OK, TRUNCATED
from ucd.profiles.chunking import Budget, ChatRenderer, Plan, plan_user, request_text
from ucd.profiles.config import ChecksConfig, SamplingConfig
from ucd.profiles.facts import history_facts
from ucd.profiles.history import entry_lines
from ucd.profiles.prompts import Templates
from ucd.schema import fingerprint

REQUEST_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("key", pa.string()),
        ("attempt", pa.int32()),
        ("seed", pa.int64()),
        ("temperature", pa.float64()),
        ("n_history", pa.int32()),
        ("prompt_tokens", pa.int32()),
        ("tokenized_prompt", pa.list_(pa.int32())),
        ("messages_json", pa.string()),
    ]
)

# Per-user input of a round: the history plus what is already stored for the user.
STATE_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("history", pa.list_(pa.int32())),
        ("history_rating", pa.list_(pa.float32())),
        ("done_key", pa.list_(pa.string())),
        ("done_attempt", pa.list_(pa.int32())),
        ("done_status", pa.list_(pa.string())),
        ("done_text", pa.list_(pa.string())),
    ]
)


@dataclass(frozen=True)
class Done:
    attempt: int
    status: str
    text: str


def settled(d: Done | None, retries: int) -> bool:
    return d is not None and (d.status == OK or d.attempt >= retries)


def next_keys(plan: Plan, done: dict[str, Done], retries: int) -> list[tuple[str, int]]:
    """(key, attempt) pairs runnable now."""
    out = []
    for key in plan.keys:
        d = done.get(key)
        if settled(d, retries):
            continue
        if all(settled(done.get(k), retries) for k in plan.deps(key)):
            out.append((key, 0 if d is None else d.attempt + 1))
    return out


def request_seed(base: int, user_id: int, key: str, attempt: int) -> int:
    return int(fingerprint(base, user_id, key, attempt), 16) % (2**31 - 1)


class RequestBuilder:
    """Ray Data UDF (also usable on its own): user states in, request rows out."""

    def __init__(
        self,
        tokenizer_path: str,
        item_text: dict[int, str],
        tpl: Templates,
        budget: Budget,
        sampling: SamplingConfig,
        checks: ChecksConfig,
        field_chars: int,
        max_items: int | None,
        system_role: bool,
        list_items: int | None = None,
    ):
        from transformers import AutoTokenizer

        self.render = ChatRenderer(AutoTokenizer.from_pretrained(tokenizer_path), system_role)
        self.item_text = item_text
        self.tpl, self.budget = tpl, budget
        self.sampling, self.checks = sampling, checks
        self.field_chars, self.max_items, self.list_items = field_chars, max_items, list_items

    def plan(self, user_id: int, history: list[int], ratings: list[float | None] | None) -> Plan:
        if self.max_items is not None and len(history) > self.max_items:
            history = history[-self.max_items :]
            ratings = ratings[-self.max_items :] if ratings is not None else None
        lines = entry_lines(history, ratings, self.item_text, self.field_chars)
        facts = None
        if self.tpl.facts:
            rat = ratings if ratings is not None else [None] * len(history)

            def facts(idx: list[int]) -> str:
                return history_facts([history[i] for i in idx], [rat[i] for i in idx], self.item_text)

        return plan_user(user_id, lines, self.render, self.tpl, self.budget, facts, self.list_items)

    def requests_for(self, user_id, history, ratings, done: dict[str, Done]) -> list[dict]:
        plan = self.plan(user_id, history, ratings)
        prior = {k: d.text for k, d in done.items() if d.status in (OK, TRUNCATED) and d.text}
        rows = []
        for key, attempt in next_keys(plan, done, self.checks.retries):
            user_text = request_text(plan, key, self.tpl, prior, self.render, self.budget)
            temp = self.sampling.temperature
            if attempt > 0:
                temp = max(temp, self.checks.retry_min_temperature)
            ids = self.render.ids(user_text)
            rows.append(
                {
                    "user_id": user_id,
                    "key": key,
                    "attempt": attempt,
                    "seed": request_seed(self.sampling.seed, user_id, key, attempt),
                    "temperature": temp,
                    "n_history": plan.n_history,
                    "prompt_tokens": len(ids),
                    "tokenized_prompt": ids,
                    "messages_json": json.dumps(self.render.messages(user_text)),
                }
            )
        return rows

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: list[dict] = []
        cols = {c: batch.column(c).to_pylist() for c in STATE_SCHEMA.names}
        for i, uid in enumerate(cols["user_id"]):
            done = {
                k: Done(a, s, t or "")
                for k, a, s, t in zip(
                    cols["done_key"][i] or [],
                    cols["done_attempt"][i] or [],
                    cols["done_status"][i] or [],
                    cols["done_text"][i] or [],
                    strict=True,
                )
            }
            rows.extend(self.requests_for(uid, cols["history"][i], cols["history_rating"][i], done))
        return pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)
