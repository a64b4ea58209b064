"""Prompt building: templates, history serialisation, no leakage of evaluation targets."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest
from profile_helpers import smollm2, tiny_prepared

from ucd.profiles.chunking import Budget
from ucd.profiles.config import ChecksConfig, SamplingConfig, load_profile_config
from ucd.profiles.facts import history_facts
from ucd.profiles.history import entry_lines, load_prepared, truncate_fields
from ucd.profiles.prompts import DOMAINS, STYLES, TEMPLATE_VERSION, templates
from ucd.profiles.requests import RequestBuilder
from ucd.schema import read_table


@pytest.fixture(scope="module")
def model_path() -> str:
    return smollm2()


def _builder(model_path, prepared, cfg=None, **budget):
    cfg = cfg or load_profile_config()
    b = Budget(
        budget.get("max_model_len", cfg.llm.max_model_len),
        budget.get("max_tokens", cfg.sampling.max_tokens),
        budget.get("max_chunks", cfg.chunking.max_chunks),
        budget.get("mode", cfg.chunking.mode),
    )
    return RequestBuilder(
        model_path,
        prepared.item_text,
        templates(prepared.domain, cfg.prompt.style, cfg.prompt.facts),
        b,
        SamplingConfig(),
        ChecksConfig(),
        cfg.prompt.field_chars,
        budget.get("max_items", cfg.prompt.max_items),
        True,
    )


def _user_turn(row) -> str:
    return json.loads(row["messages_json"])[-1]["content"]


def test_templates_are_versioned_and_distinct():
    seen = {}
    for d in DOMAINS:
        for s in STYLES:
            t = templates(d, s)
            assert t.version == f"{d}-{s}-{TEMPLATE_VERSION}"
            text = t.profile("- 5/5 | Title: X")
            assert "- 5/5 | Title: X" in text
            if s == "structured":
                for section in ("Preferences", "Behavioral Insights", "Engagement Trends"):
                    assert section in text
            else:
                assert "five short paragraphs" in text
            seen[t.digest()] = t.version
    assert len(seen) == 6  # every template's wording is fingerprinted apart
    with pytest.raises(ValueError):
        templates("books", "structured")
    plain = templates("movies", "structured", facts=False)
    assert plain.version.endswith("-nofacts") and plain.digest() != templates("movies", "structured").digest()
    assert "Counts computed" not in plain.profile("- x", facts="- items: 1")
    assert "Counts computed from these movies:\n- items: 1" in templates("movies", "long").profile(
        "- x", facts="- items: 1"
    )


def test_history_facts_counts_fields():
    text = {
        1: "Title: A | Year: 1995 | Genres: Drama, Comedy",
        2: "Title: B | Year: 1987 | Genres: Drama",
        3: "Title: C | Brand: Acme | Categories: Beauty, Nails",
        4: "Title: D | Year: 1999 | Genres: Horror",
    }
    f = history_facts([1, 2, 3, 4], [5.0, 4.0, None, 1.0], text)
    assert "- items: 4" in f
    assert "- average rating 3.3/5; 67% rated 4-5, 33% rated 1-2" in f
    assert "- genres: Drama 50%, Comedy 25%, Horror 25%" in f
    assert "- brand: Acme 25%" in f and "- categories: Beauty 25%, Nails 25%" in f
    assert "- decades: 1990s 67%, 1980s 33%" in f


def test_fields_are_truncated_to_budget():
    text = "Title: " + "A" * 300 + " | Genres: Drama"
    out = truncate_fields(text, 50)
    title, genres = out.split(" | ")
    assert len(title) == 50 and title.endswith("…")
    assert genres == "Genres: Drama"
    lines = entry_lines([1, 2], [4.0, None], {1: "Title: One", 2: "Title: Two"}, 50)
    assert lines == ["- 4/5 | Title: One", "- Title: Two"]


def test_chat_template_applied_and_newest_items_kept(model_path, tmp_path):
    prepared = load_prepared(tiny_prepared(tmp_path))
    rb = _builder(model_path, prepared, max_items=3)
    rows = rb.requests_for(1, [1, 2, 3, 4, 5], [1.0, 2.0, 3.0, 4.0, 5.0], {})
    assert [r["key"] for r in rows] == ["final"]
    text = rb.render.tok.decode(rows[0]["tokenized_prompt"])
    assert text.startswith("<|im_start|>system") and text.rstrip().endswith("<|im_start|>assistant")
    assert rows[0]["prompt_tokens"] == len(rows[0]["tokenized_prompt"])
    turn = _user_turn(rows[0])
    # max_items=3 keeps the three newest, in chronological order.
    assert "Film 1 " not in turn and "Film 2 " not in turn
    assert turn.index("Film 3 ") < turn.index("Film 4 ") < turn.index("Film 5 ")
    assert rows[0]["n_history"] == 3
    # The facts block counts only the kept items, and comes before the list.
    assert "- items: 3\n- average rating 4.0/5" in turn and turn.index("- items: 3") < turn.index("Film 3 ")


def _assert_no_leak(prepared_dir, model_path, users=None):
    prepared = load_prepared(prepared_dir)
    seqs = read_table(prepared_dir / "sequences.parquet", "sequences")
    items = read_table(prepared_dir / "items.parquet", "items", columns=["item_id", "title"])
    title = dict(zip(items.column("item_id").to_pylist(), items.column("title").to_pylist(), strict=True))
    targets: dict[int, set[int]] = {}
    ev = seqs.filter(pc.invert(pc.equal(seqs.column("split"), "train")))
    for u, t in zip(ev.column("user_id").to_pylist(), ev.column("target").to_pylist(), strict=True):
        targets.setdefault(u, set()).add(t)
    rb = _builder(model_path, prepared)
    checked = 0
    train = prepared.train
    for u, hist, rat in zip(
        *(train.column(c).to_pylist() for c in ("user_id", "history", "history_rating")), strict=True
    ):
        if users is not None and u not in users:
            continue
        rows = rb.requests_for(u, hist, rat, {})
        assert rows, u
        prompt = "\n".join(_user_turn(r) for r in rows)
        train_titles = {title[i] for i in hist}
        # The newest training item is always in the prompt (sanity check of the probe).
        assert f"Title: {title[hist[-1]]}"[:100] in prompt
        for t in targets.get(u, ()):
            assert t not in hist, f"user {u}: target {t} inside the training history"
            if title[t] in train_titles:
                continue  # a different item with the same title (ML-100K has a few duplicates)
            assert f"Title: {title[t]} |" not in prompt, (
                f"user {u}: target '{title[t]}' leaked into the prompt"
            )
            checked += 1
    return checked


def test_no_target_leaks_into_prompts_ml100k_loo(ml100k_loo, model_path):
    checked = _assert_no_leak(ml100k_loo, model_path)
    assert checked >= 1800  # valid + test targets of all 943 users, bar duplicate titles


def test_no_target_leaks_into_prompts_ml100k_temporal(data_dir, tmp_path, model_path):
    from ucd.data.prepare import prepare_named

    out = prepare_named(
        "ml-100k", tmp_path / "temporal", protocol="temporal", data_dir=data_dir, log=lambda *_: None
    )
    seqs = read_table(out / "sequences.parquet", "sequences")
    test_users = set(seqs.filter(pc.equal(seqs.column("split"), "test")).column("user_id").to_pylist())
    assert test_users
    assert _assert_no_leak(out, model_path, users=set(list(sorted(test_users))[:150])) >= 1


def test_list_items_lists_newest_and_counts_all(model_path, tmp_path):
    prepared = load_prepared(tiny_prepared(tmp_path))
    rb = RequestBuilder(
        model_path,
        prepared.item_text,
        templates("movies", "structured"),
        Budget(2048, 160, 4, "aggregate"),
        SamplingConfig(),
        ChecksConfig(),
        120,
        4,
        True,
        list_items=2,
    )
    (row,) = rb.requests_for(1, [1, 2, 3, 4, 5], [1.0, 2.0, 3.0, 4.0, 5.0], {})
    turn = _user_turn(row)
    assert "- items: 4\n- average rating 3.5/5" in turn  # facts over the 4 kept (max_items)
    assert "Film 4 " in turn and "Film 5 " in turn and "Film 3 " not in turn  # only 2 listed
    assert row["n_history"] == 4


def test_ratings_fall_back_to_interactions(tmp_path):
    import pyarrow as pa

    from ucd import schema

    folder = tiny_prepared(tmp_path)
    seqs = read_table(folder / "sequences.parquet", "sequences").drop_columns(["history_rating"])
    meta = {"dataset": "tiny", "fingerprint": "tiny0001", "domain": "movies"}
    schema.write_table(seqs, folder / "sequences.parquet", "sequences", meta)
    inter = pa.table(
        {
            "user_id": pa.array([2, 2, 2], pa.int32()),
            "item_id": pa.array([6, 7, 8], pa.int32()),
            "timestamp": pa.array([1, 2, 3], pa.int64()),
            "rating": pa.array([1.0, None, 5.0], pa.float32()),
        }
    )
    schema.write_table(inter, folder / "interactions.parquet", "interactions", meta)
    p = load_prepared(folder)
    row = p.train.filter(pc.equal(p.train.column("user_id"), 2)).to_pylist()[0]
    assert row["history"] == [6, 7, 8] and row["history_rating"] == [1.0, None, 5.0]
    assert p.eval_users == {1, 2, 3, 4}
