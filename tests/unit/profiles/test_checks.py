"""Output checks, retry bookkeeping, result normalisation, embedder and PCA (no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ucd.embed.embedder import EmbedBatch, Embedder
from ucd.embed.reduce import PCA
from ucd.llm.backends import RESULT_SCHEMA, VLLMPost, VLLMPre, finish_reason, normalize_results
from ucd.profiles.checks import check_table, judge
from ucd.profiles.chunking import Plan
from ucd.profiles.config import ChecksConfig, SamplingConfig
from ucd.profiles.requests import Done, next_keys, request_seed

CFG = ChecksConfig()
GOOD = (
    "Preferences:\n- Drama ~45%, thrillers ~25%, mostly 1990s films\n- Dislikes slapstick comedy\n"
    "Behavioral Insights:\n- Generous rater (average 4.1/5)\nEngagement Trends:\n- Moving towards older classics"
)
# Real SmolLM2-135M answers at temperature 0.7 look like this.
LOOPING = "Title: The Best of 2013: The Best of 2013: The Best of 2013: The Best of 2013: The Best of 2013: The Best of 2013"
REPEATED_LINES = (
    "Preferences:\n- Drama\n- Drama\n- Drama\nBehavioral Insights:\n- Rates generously, average four of five "
    "stars across ninety films\nEngagement Trends:\n- Shifted from action towards romance and older classics"
)
# A real SmolLM2 answer that the numbering made look varied.
NUMBERED_LOOP = "Title: The Best Movies Ever\nGenre: Drama\nTop 10 Most Popular Movies:\n" + "".join(
    f"{i}. The Best Movies Ever\n" for i in range(1, 8)
)
LIST_LOOP = "Genres: Drama, Romance, Crime, Crime, Crime, Crime, Crime, Crime, Crime, Crime, Crime, Crime, Crime, Crime"


@pytest.mark.parametrize(
    ("text", "finish", "error", "status", "reason"),
    [
        (GOOD, "stop", "", "ok", ""),
        (GOOD, "length", "", "truncated", "hit max_tokens"),
        ("", "stop", "", "failed", "empty"),
        ("   \n ", "stop", "", "failed", "empty"),
        (LOOPING, "length", "", "failed", "degenerate: repeated phrases"),
        (LIST_LOOP, "length", "", "failed", "degenerate: repeated phrases"),
        (REPEATED_LINES, "stop", "", "failed", "degenerate: repeated lines"),
        (NUMBERED_LOOP, "length", "", "failed", "degenerate: repeated phrases"),
        (GOOD, "error", "VLLMValidationError: too long", "failed", "error: VLLMValidationError: too long"),
    ],
)
def test_judge(text, finish, error, status, reason):
    v = judge(text, finish, error, CFG)
    assert (v.status, v.reason) == (status, reason)


def test_check_table_adds_status_columns():
    t = pa.table({"text": [GOOD, ""], "finish": ["stop", "stop"], "error": ["", ""]})
    out = check_table(t, CFG)
    assert out.column("status").to_pylist() == ["ok", "failed"]
    assert out.column("created_at").type == pa.timestamp("us", tz="UTC")


def test_retry_once_then_settled_with_new_seed():
    plan = Plan(3, "single", ["- x"], 1, ["final"])
    assert next_keys(plan, {}, retries=1) == [("final", 0)]
    assert next_keys(plan, {"final": Done(0, "truncated", GOOD)}, retries=1) == [("final", 1)]
    assert next_keys(plan, {"final": Done(1, "failed", "")}, retries=1) == []  # settled, counted as failed
    assert next_keys(plan, {"final": Done(0, "ok", GOOD)}, retries=1) == []
    assert next_keys(plan, {"final": Done(0, "failed", "")}, retries=0) == []
    assert request_seed(0, 3, "final", 0) != request_seed(0, 3, "final", 1)


def test_finish_reason_and_vllm_rows():
    assert finish_reason([5, 6, 2], {2}, 3) == "stop"  # stopped on EOS exactly at the limit
    assert finish_reason([5, 6, 7], {2}, 3) == "length"
    assert finish_reason([5, 2], {2}, 3) == "stop"
    pre = VLLMPre(SamplingConfig(per_request_seed=True, max_tokens=9))(
        {"tokenized_prompt": np.array([1, 2]), "temperature": 0.4, "seed": 11}
    )
    assert pre["tokenized_prompt"] == [1, 2] and pre["sampling_params"]["seed"] == 11
    assert (
        "seed"
        not in VLLMPre(SamplingConfig(per_request_seed=False))(
            {"tokenized_prompt": [1], "temperature": 0.0, "seed": 1}
        )["sampling_params"]
    )
    row = {
        "user_id": 1,
        "key": "final",
        "attempt": 0,
        "seed": 5,
        "n_history": 3,
        "prompt_tokens": 10,
        "generated_tokens": [4, 4, 4],
        "generated_text": "abc",
        "num_generated_tokens": 3,
    }
    post = VLLMPost({2}, 3)(row)
    assert post["finish"] == "length" and post["output_tokens"] == 3


def test_normalize_results_keeps_failed_inference_rows():
    # Rows that failed inside ray.data.llm bypass the postprocess: other columns, null text.
    ok = {
        "user_id": 1,
        "key": "final",
        "attempt": 0,
        "seed": 1,
        "n_history": 2,
        "prompt_tokens": 9,
        "output_tokens": 4,
        "text": GOOD,
        "finish": "stop",
        "error": "",
        "__inference_error__": "",
    }
    bad = {
        "user_id": 2,
        "key": "final",
        "attempt": 0,
        "seed": 1,
        "n_history": 2,
        "prompt_tokens": 9,
        "output_tokens": None,
        "text": None,
        "finish": None,
        "error": None,
        "generated_text": "",
        "__inference_error__": "ValueError: prompt too long",
    }
    out = normalize_results(pa.Table.from_pylist([ok, bad]))
    assert out.schema == RESULT_SCHEMA
    r = out.to_pylist()
    assert r[1]["error"] == "ValueError: prompt too long" and r[1]["text"] == "" and r[1]["finish"] == "error"
    assert judge(r[1]["text"], r[1]["finish"], r[1]["error"], CFG).status == "failed"


@pytest.fixture(scope="module")
def embedder():
    return Embedder("all-minilm-l6-v2")


def test_embedder_normalised_and_semantic(embedder):
    v = embedder.embed(
        ["loves horror and slasher films", "enjoys scary horror movies", "buys organic shampoo"]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    e5 = Embedder("all-minilm-l6-v2", prefix="query: ")
    assert not np.allclose(e5.embed(["horror films"]), embedder.embed(["horror films"]))


def test_embed_batch_only_final_accepted_rows():
    udf = EmbedBatch("all-minilm-l6-v2", "", "cpu", 8, None, ["ok"])
    t = pa.table(
        {"key": ["final", "c0", "final"], "status": ["ok", "ok", "failed"], "text": [GOOD, GOOD, ""]}
    )
    out = udf(t)
    emb = out.column("embedding").to_pylist()
    assert emb[0] is not None and len(emb[0]) == 384 and emb[1] is None and emb[2] is None


def test_pca_fit_transform_save_load(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    x[:, 0] *= 10  # one dominant direction
    pca = PCA.fit(x[:40], 4)
    y = pca.transform(x)
    assert y.shape == (50, 4) and np.allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
    assert abs(pca.components[0, 0]) > 0.95 and pca.explained_variance_ratio[0] > 0.5
    path = pca.save(tmp_path / "r.npz", fitted_on=list(range(40)))
    again = PCA.load(path)
    assert np.allclose(again.transform(x), y)
    assert np.load(path)["fitted_on"].tolist() == list(range(40))


def test_openai_backend_retries_and_reports_length(monkeypatch):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from ucd.llm.backends import OpenAIGenerator
    from ucd.profiles.config import LLMConfig

    calls = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append((body, self.headers.get("Authorization")))
            if len(calls) == 1:  # the first call fails like an overloaded server
                self.send_response(503)
                self.end_headers()
                return
            reply = {
                "choices": [
                    {"message": {"content": GOOD}, "finish_reason": "length" if body["seed"] == 2 else "stop"}
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 20},
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("TEST_KEY", "sk-test")
    try:
        cfg = LLMConfig(
            backend="openai",
            api_base=f"http://127.0.0.1:{srv.server_port}/v1",
            api_key_env="TEST_KEY",
            model="m",
            tokenizer="t",
            requests_per_second=100,
            max_retries=2,
        )
        gen = OpenAIGenerator(cfg, SamplingConfig(max_tokens=20))
        rows = [
            {
                "user_id": u,
                "key": "final",
                "attempt": 0,
                "seed": u,
                "n_history": 3,
                "prompt_tokens": 40,
                "temperature": 0.2,
                "messages_json": json.dumps([{"role": "user", "content": "hi"}]),
            }
            for u in (1, 2)
        ]
        out = gen(pa.Table.from_pylist(rows)).to_pylist()
    finally:
        srv.shutdown()
    assert len(calls) == 3  # one retry after the 503
    assert calls[-1][1] == "Bearer sk-test" and calls[-1][0]["messages"] == [
        {"role": "user", "content": "hi"}
    ]
    assert [r["finish"] for r in out] == ["stop", "length"]
    assert out[0]["text"] == GOOD and out[0]["prompt_tokens"] == 50 and out[0]["output_tokens"] == 20


def test_shipped_profile_configs_and_placement():

    from ucd.llm.backends import vllm_processor_kwargs
    from ucd.profiles.config import load_profile_config

    cpu = load_profile_config("cpu")
    kw = vllm_processor_kwargs(cpu.llm, "/m")
    # Without a CPU-only bundle the vLLM stage would wait for a GPU forever.
    assert kw["placement_group_config"] == {"bundles": [{"CPU": 1.0}], "strategy": "PACK"}
    assert kw["accelerator_type"] is None and kw["chat_template_stage"] is False
    assert kw["engine_kwargs"]["max_model_len"] == cpu.llm.max_model_len
    gpu = load_profile_config("gpu")
    kw = vllm_processor_kwargs(gpu.llm, gpu.llm.model)
    assert kw["placement_group_config"]["bundle_per_worker"]["GPU"] == 1
    assert kw["accelerator_type"] == gpu.llm.accelerator_type and kw["concurrency"] == gpu.llm.concurrency
    assert gpu.embed.prefix == "query: " and gpu.embed.reduce.method == "pca"
    assert load_profile_config(None).llm.model == cpu.llm.model  # cpu.yaml is the embedded default
