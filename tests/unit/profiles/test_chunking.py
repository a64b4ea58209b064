"""Long histories: chunk plans whose every request fits the context, by the tokenizer's count."""

from __future__ import annotations

import pytest
from profile_helpers import smollm2

from ucd.profiles.chunking import Budget, ChatRenderer, Plan, plan_user, request_text
from ucd.profiles.config import ChecksConfig, SamplingConfig
from ucd.profiles.history import load_prepared
from ucd.profiles.prompts import templates
from ucd.profiles.requests import Done, RequestBuilder, next_keys

CTX, ANSWER = 640, 64


@pytest.fixture(scope="module")
def model_path() -> str:
    return smollm2()


@pytest.fixture(scope="module")
def long_users(ml100k_loo):
    prepared = load_prepared(ml100k_loo)
    t = prepared.train
    rows = [
        (u, h, r)
        for u, h, r in zip(
            *(t.column(c).to_pylist() for c in ("user_id", "history", "history_rating")), strict=True
        )
        if len(h) > 120
    ]
    return prepared, rows[:6]


def _builder(model_path, prepared, mode, max_chunks=4):
    return RequestBuilder(
        model_path,
        prepared.item_text,
        templates("movies", "structured"),
        Budget(CTX, ANSWER, max_chunks, mode),
        SamplingConfig(max_tokens=ANSWER),
        ChecksConfig(),
        120,
        None,
        True,
    )


def _run_plan(rb: RequestBuilder, u, h, r, answer: str):
    """Drive a user's plan to the end with a fixed answer; return every request made."""
    done: dict[str, Done] = {}
    made = []
    for _ in range(20):
        rows = rb.requests_for(u, h, r, done)
        if not rows:
            break
        for row in rows:
            made.append(row)
            done[row["key"]] = Done(row["attempt"], "ok", answer)
    return made


@pytest.mark.parametrize("mode", ["aggregate", "update"])
def test_every_request_fits_the_context(model_path, long_users, mode):
    prepared, users = long_users
    rb = _builder(model_path, prepared, mode)
    tok = rb.render.tok
    # A worst-case partial profile: as long as the answer budget allows.
    answer = tok.decode(tok("word " * 400, add_special_tokens=False)["input_ids"][:ANSWER])
    for u, h, r in users:
        plan = rb.plan(u, h, r)
        assert plan.mode == mode and len(plan.chunks) > 1
        made = _run_plan(rb, u, h, r, answer)
        assert [m["key"] for m in made][-1] == "final"
        for m in made:
            # Counted by the model's tokenizer on the chat-templated text.
            assert m["prompt_tokens"] == len(
                tok(tok.decode(m["tokenized_prompt"]), add_special_tokens=False)["input_ids"]
            )
            assert m["prompt_tokens"] + ANSWER <= CTX, (u, m["key"], m["prompt_tokens"])
        if mode == "aggregate":
            assert [m["key"] for m in made] == plan.keys
        else:
            assert [m["key"] for m in made] == plan.keys  # one after the other


def test_newest_items_kept_when_chunks_run_out(model_path, long_users):
    prepared, users = long_users
    rb = _builder(model_path, prepared, "aggregate", max_chunks=2)
    u, h, r = users[0]
    plan = rb.plan(u, h, r)
    assert len(plan.chunks) == 2
    assert plan.n_history < len(h)  # the oldest items were dropped...
    newest = prepared.item_text[h[-1]].split(" | ")[0]
    oldest = prepared.item_text[h[0]].split(" | ")[0]
    assert newest in plan.chunks[-1].splitlines()[-1]  # ...and the newest one closes the last chunk
    assert all(oldest not in c for c in plan.chunks) or h.count(h[0]) > 1


def test_truncate_mode_is_a_single_request(model_path, long_users):
    prepared, users = long_users
    rb = _builder(model_path, prepared, "truncate")
    u, h, r = users[0]
    made = _run_plan(rb, u, h, r, "x")
    assert len(made) == 1 and made[0]["prompt_tokens"] + ANSWER <= CTX
    assert 0 < made[0]["n_history"] < len(h)


def test_plan_rejects_contexts_without_room(model_path):
    from transformers import AutoTokenizer

    render = ChatRenderer(AutoTokenizer.from_pretrained(model_path))
    tpl = templates("movies", "structured")
    lines = [f"- 4/5 | Title: Film number {i} (1995) | Genres: Drama" for i in range(60)]
    with pytest.raises(
        ValueError, match="max_model_len 64 leaves no room for a prompt next to max_tokens 64"
    ):
        plan_user(1, lines, render, tpl, Budget(64, 64, 4, "aggregate"))
    for mode in ("aggregate", "update"):
        with pytest.raises(
            ValueError, match=r"max_model_len 300 is too small for chunked prompts \(overhead"
        ):
            plan_user(1, lines, render, tpl, Budget(300, 200, 4, mode))
    # A context that holds only the newest lines: truncate keeps those, list_last lists fewer.
    plan = plan_user(1, lines, render, tpl, Budget(400, 64, 4, "truncate"))
    assert plan.mode == "single" and 0 < plan.n_history < 60 and plan.chunks[0].endswith(lines[-1])
    listed = plan_user(1, lines, render, tpl, Budget(4096, 64, 4, "aggregate"), list_last=5)
    assert listed.chunks == ["\n".join(lines[-5:])] and listed.n_history == 60


def test_aggregate_waits_for_partials_and_falls_back_when_all_fail(model_path):
    from transformers import AutoTokenizer

    render = ChatRenderer(AutoTokenizer.from_pretrained(model_path))
    tpl = templates("generic", "long")
    plan = Plan(7, "aggregate", ["- a", "- b", "- c"], 3, ["c0", "c1", "c2", "final"])
    assert next_keys(plan, {}, 1) == [("c0", 0), ("c1", 0), ("c2", 0)]
    done = {"c0": Done(0, "ok", "P0"), "c1": Done(0, "failed", ""), "c2": Done(0, "ok", "P2")}
    assert next_keys(plan, done, 1) == [("c1", 1)]  # retried before the merge
    done["c1"] = Done(1, "failed", "")
    assert next_keys(plan, done, 1) == [("final", 0)]  # out of retries: merge what exists
    b = Budget(2048, 64, 4, "aggregate")
    merge = request_text(plan, "final", tpl, {"c0": "P0", "c2": "P2"}, render, b)
    assert "Profile 1:\nP0" in merge and "Profile 2:\nP2" in merge
    fallback = request_text(plan, "final", tpl, {}, render, b)
    assert "- c" in fallback and "partial profiles" not in fallback


def test_system_turn_folded_for_templates_without_one(model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "<turn>{{ m['role'] }}\n{{ m['content'] }}</turn>\n{% endfor %}<turn>model\n"
    )
    render = ChatRenderer(tok, system_role=True)
    text = render.text("hello")
    assert text.startswith("<turn>user\nYou write concise") and "hello" in text
    assert render.system_role is False


def test_models_prepare_is_idempotent(model_path, capsys):
    import time
    from pathlib import Path

    from profile_helpers import MODEL_CACHE

    from ucd.cli.profile_cli import register

    t = time.perf_counter()
    import argparse

    ap = argparse.ArgumentParser()
    register(ap.add_subparsers(dest="cmd"))
    args = ap.parse_args(["models", "prepare", "--home", str(MODEL_CACHE)])
    assert args.func(args) == 0
    assert time.perf_counter() - t < 5  # already converted: nothing redone
    out = Path(capsys.readouterr().out.strip())
    assert out == Path(model_path)
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    assert "quantization_config" not in (out / "config.json").read_text()  # vLLM would reject it
