"""Fitting histories into the model's context, with token counts from the model's tokenizer.

A history that fits becomes one request. One that does not is cut into chunks, newest first
so that, when even ``max_chunks`` chunks cannot hold it, the oldest items are the ones left
out. Chunks are then either profiled separately and merged (``aggregate``) or folded into a
running profile (``update``); ``truncate`` keeps only the newest items that fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ucd.profiles.prompts import Templates, messages

# Room for the tokenizer not being additive across line boundaries.
MARGIN_TOKENS = 16


class ChatRenderer:
    """Applies the model's own chat template and counts tokens with its tokenizer."""

    def __init__(self, tokenizer, system_role: bool = True):
        self.tok = tokenizer
        self.system_role = system_role
        self._plain = getattr(tokenizer, "chat_template", None) is None

    def messages(self, user_text: str) -> list[dict[str, str]]:
        return messages(user_text, self.system_role)

    def text(self, user_text: str) -> str:
        if self._plain:
            # A base model without a template: the bare text, answer after a blank line.
            return "\n\n".join(m["content"] for m in self.messages(user_text)) + "\n\n"
        try:
            return self.tok.apply_chat_template(
                self.messages(user_text), add_generation_prompt=True, tokenize=False
            )
        except Exception:
            if not self.system_role:
                raise
            # Templates such as Gemma's reject a system turn: fold it into the user turn.
            self.system_role = False
            return self.text(user_text)

    def ids(self, user_text: str) -> list[int]:
        # The template already holds any BOS the model expects.
        return self.tok(self.text(user_text), add_special_tokens=False)["input_ids"]

    def count(self, user_text: str) -> int:
        return len(self.ids(user_text))

    def line_counts(self, lines: list[str]) -> list[int]:
        if not lines:
            return []
        enc = self.tok([ln + "\n" for ln in lines], add_special_tokens=False)["input_ids"]
        return [len(x) for x in enc]

    def clip(self, text: str, max_tokens: int) -> str:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.tok.decode(ids[:max_tokens])


@dataclass
class Budget:
    max_model_len: int
    max_tokens: int
    max_chunks: int
    mode: str  # aggregate | update | truncate

    @property
    def prompt(self) -> int:
        """Prompt tokens allowed so that the answer still fits the context."""
        return self.max_model_len - self.max_tokens - MARGIN_TOKENS


@dataclass
class Plan:
    """What one user needs: ``chunks`` are history blocks, oldest first, with their facts."""

    user_id: int
    mode: str  # single | aggregate | update
    chunks: list[str]
    n_history: int
    keys: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    def fact(self, i: int) -> str:
        return self.facts[i] if i < len(self.facts) else ""

    def deps(self, key: str) -> list[str]:
        if self.mode == "aggregate" and key == "final":
            return [k for k in self.keys if k != "final"]
        if self.mode == "update":
            i = self.keys.index(key)
            return self.keys[i - 1 : i] if i > 0 else []
        return []


# Facts for the lines at these indices ("" when the prompt has no facts block).
FactsFn = Callable[[list[int]], str]


def _no_facts(idx: list[int]) -> str:
    return ""


def _pack_newest(counts: list[int], capacity: int, n_chunks: int) -> list[list[int]]:
    """Greedy packing of line indices from the newest backwards; chunks oldest first."""
    chunks: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i in range(len(counts) - 1, -1, -1):
        c = counts[i]
        if cur and used + c > capacity:
            chunks.append(cur)
            if len(chunks) == n_chunks:
                cur = []
                break
            cur, used = [], 0
        if c > capacity:
            continue  # a single line longer than a chunk cannot be sent at all
        cur.append(i)
        used += c
    if cur:
        chunks.append(cur)
    return [sorted(ch) for ch in reversed(chunks[:n_chunks])]


def _fit(render: ChatRenderer, make: Callable[[list[int]], str], idx: list[int], limit: int) -> list[int]:
    """Drop the oldest lines until the rendered prompt is within ``limit`` tokens."""
    while idx and render.count(make(idx)) > limit:
        idx = idx[1:]
    return idx


@dataclass
class _Lines:
    """One user's history lines and what turns a selection of them into a prompt."""

    lines: list[str]
    facts: FactsFn
    render: ChatRenderer
    tpl: Templates
    limit: int

    def text(self, idx: list[int]) -> str:
        return "\n".join(self.lines[i] for i in idx)

    def fit(self, make: Callable[[list[int]], str], idx: list[int]) -> list[int]:
        return _fit(self.render, make, idx, self.limit)

    def single(self, user_id: int, idx: list[int]) -> Plan:
        """One request: the newest of ``idx`` that fit, with their own facts."""
        kept = self.fit(lambda ix: self.tpl.profile(self.text(ix), facts=self.facts(ix)), idx)
        return Plan(user_id, "single", [self.text(kept)], len(kept), ["final"], [self.facts(kept)])


def _prompt_limit(budget: Budget) -> int:
    """Prompt tokens per request; an error when the answer leaves no room at all."""
    limit = budget.prompt
    if limit <= 0:
        raise ValueError(
            f"max_model_len {budget.max_model_len} leaves no room for a prompt next to "
            f"max_tokens {budget.max_tokens}"
        )
    return limit


def _chunk_layout(render: ChatRenderer, tpl: Templates, budget: Budget, all_facts: str) -> tuple[int, int]:
    """(prompt tokens each chunk request spends besides its lines, most chunks allowed)."""
    if budget.mode == "aggregate":
        chunk_overhead = render.count(tpl.profile("", 99, 99, all_facts))
        # The merge prompt must hold every partial profile (each up to max_tokens).
        merge_room = budget.prompt - render.count(tpl.aggregate([""] * budget.max_chunks))
        return chunk_overhead, max(1, min(budget.max_chunks, merge_room // budget.max_tokens))
    # update: each later prompt carries the running profile (up to max_tokens)
    return render.count(tpl.update("", "", all_facts)) + budget.max_tokens, budget.max_chunks


def _chunk_capacity(render: ChatRenderer, tpl: Templates, budget: Budget, all_facts: str) -> tuple[int, int]:
    """(line tokens one chunk may hold, most chunks allowed); an error when no line fits."""
    chunk_overhead, n_max = _chunk_layout(render, tpl, budget, all_facts)
    capacity = budget.prompt - chunk_overhead
    if capacity <= 0:
        raise ValueError(
            f"max_model_len {budget.max_model_len} is too small for chunked prompts "
            f"(overhead {chunk_overhead} tokens + answer {budget.max_tokens})"
        )
    return capacity, n_max


def _chunked_plan(user_id: int, u: _Lines, chunks: list[list[int]], mode: str, max_tokens: int) -> Plan:
    """Several requests: each chunk fitted to its own prompt, then merged or folded in turn."""
    n = len(chunks)
    placeholder = "x " * max_tokens  # a running profile as long as an answer can be
    fitted = []
    for i, ch in enumerate(chunks):
        if mode == "aggregate" or i == 0:
            make = lambda ix, i=i: u.tpl.profile(u.text(ix), i + 1, n, u.facts(ix))  # noqa: E731
        else:
            make = lambda ix: u.tpl.update(placeholder, u.text(ix), u.facts(ix))  # noqa: E731
        fitted.append(u.fit(make, ch))
    texts = [u.text(ch) for ch in fitted]
    chunk_facts = [u.facts(ch) for ch in fitted]
    n_hist = sum(len(ch) for ch in fitted)
    if mode == "aggregate":
        keys = [f"c{i}" for i in range(n)] + ["final"]
        return Plan(user_id, "aggregate", texts, n_hist, keys, chunk_facts)
    keys = [f"c{i}" for i in range(n - 1)] + ["final"]
    return Plan(user_id, "update", texts, n_hist, keys, chunk_facts)


def plan_user(
    user_id: int,
    lines: list[str],
    render: ChatRenderer,
    tpl: Templates,
    budget: Budget,
    facts: FactsFn | None = None,
    list_last: int | None = None,
) -> Plan:
    """``list_last``: list only that many newest lines; the facts block covers them all."""
    u = _Lines(lines, facts or _no_facts, render, tpl, _prompt_limit(budget))
    counts = render.line_counts(lines)
    every = list(range(len(lines)))
    all_facts = u.facts(every)
    overhead = render.count(tpl.profile("", facts=all_facts))
    if list_last is not None and len(lines) > list_last:
        listed = u.fit(lambda ix: tpl.profile(u.text(ix), facts=all_facts), every[-list_last:])
        return Plan(user_id, "single", [u.text(listed)], len(lines), ["final"], [all_facts])
    if overhead + sum(counts) <= u.limit or budget.mode == "truncate":
        (kept,) = _pack_newest(counts, u.limit - overhead, 1) or [[]]
        return u.single(user_id, kept)
    capacity, n_max = _chunk_capacity(render, tpl, budget, all_facts)
    chunks = _pack_newest(counts, capacity, n_max)
    if len(chunks) == 1:
        return u.single(user_id, chunks[0])
    return _chunked_plan(user_id, u, chunks, budget.mode, budget.max_tokens)


def request_text(
    plan: Plan, key: str, tpl: Templates, prior: dict[str, str], render: ChatRenderer, budget: Budget
) -> str:
    """The user turn for ``key``, given the usable texts of already-settled keys."""
    n = len(plan.chunks)
    if plan.mode == "single":
        return tpl.profile(plan.chunks[0], facts=plan.fact(0))
    if plan.mode == "aggregate":
        if key != "final":
            i = int(key[1:])
            return tpl.profile(plan.chunks[i], i + 1, n, plan.fact(i))
        partials = [prior[k] for k in plan.deps(key) if prior.get(k)]
        if not partials:
            # Every partial failed: fall back to the newest chunk alone (newest items kept).
            return tpl.profile(plan.chunks[-1], n, n, plan.fact(n - 1))
        text = tpl.aggregate(partials)
        if render.count(text) > budget.prompt:
            # A decoded answer can re-tokenise a little longer than max_tokens.
            clip = max(16, budget.max_tokens - MARGIN_TOKENS)
            text = tpl.aggregate([render.clip(p, clip) for p in partials])
        return text
    i = plan.keys.index(key)
    if i == 0:
        return tpl.profile(plan.chunks[0], 1, n, plan.fact(0))
    current = prior.get(plan.keys[i - 1], "")
    if not current:
        return tpl.profile(plan.chunks[i], i + 1, n, plan.fact(i))
    return tpl.update(render.clip(current, budget.max_tokens), plan.chunks[i], plan.fact(i))
