"""LLM backends for the profile job, as plain callables (the Ray wiring is in ucd/pipelines).

All of them take request rows (ucd.profiles.requests.REQUEST_SCHEMA) and give result rows
(``RESULT_SCHEMA``): the answer text, its token count, and ``finish`` = "length" when the
answer ran into max_tokens (that is what the truncation check needs).

- vllm: ray.data.llm's vLLM engine; this module only supplies its config and the
  pre/post-processing of rows (the engine itself is hosted by ucd/pipelines/profile_job).
- hf: transformers ``generate`` (CPU or GPU) for models vLLM cannot run.
- openai: any OpenAI-compatible ``/chat/completions`` endpoint, with retries and pacing.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import pyarrow as pa

from ucd.profiles.config import LLMConfig, SamplingConfig

RESULT_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("key", pa.string()),
        ("attempt", pa.int32()),
        ("seed", pa.int64()),
        ("n_history", pa.int32()),
        ("prompt_tokens", pa.int32()),
        ("output_tokens", pa.int32()),
        ("text", pa.string()),
        ("finish", pa.string()),
        ("error", pa.string()),
    ]
)
_PASSTHROUGH = ("user_id", "key", "attempt", "seed", "n_history", "prompt_tokens")


def finish_reason(token_ids: list[int], eos_ids: set[int], max_tokens: int) -> str:
    """vLLM keeps the EOS id at the end of the tokens when it stopped on its own."""
    if token_ids and int(token_ids[-1]) in eos_ids:
        return "stop"
    return "length" if len(token_ids) >= max_tokens else "stop"


def eos_token_ids(model_path: str) -> set[int]:
    """EOS ids from the generation config (chat models often stop on an end-of-turn token)."""
    from transformers import AutoTokenizer, GenerationConfig

    ids: set[int] = set()
    try:
        eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    except Exception:
        pass  # no generation_config.json: the tokenizer's EOS below is the fallback
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    return ids


# ---- vllm (through ray.data.llm) ----------------------------------------------------------


def resolve_env(env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    if out.get("VLLM_CPU_OMP_THREADS_BIND") == "all":
        out["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{(os.cpu_count() or 1) - 1}"
    out.setdefault("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0"))
    return out


def vllm_processor_kwargs(cfg: LLMConfig, model_path: str) -> dict[str, Any]:
    """Arguments of ``vLLMEngineProcessorConfig``: everything comes from the config."""
    engine = {
        "max_model_len": cfg.max_model_len,
        "dtype": cfg.dtype,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        **cfg.engine_kwargs,
    }
    if cfg.num_gpus > 0:
        bundle: dict[str, float] = {"GPU": cfg.num_gpus, "CPU": cfg.num_cpus}
        pg = {"bundle_per_worker": bundle, "strategy": "PACK"}
    else:
        # Without an explicit CPU bundle the stage asks Ray for a GPU and waits forever.
        engine.setdefault("enforce_eager", True)
        pg = {"bundles": [{"CPU": cfg.num_cpus}], "strategy": "PACK"}
    return dict(
        model_source=model_path,
        engine_kwargs=engine,
        batch_size=cfg.batch_size,
        concurrency=cfg.concurrency,
        accelerator_type=cfg.accelerator_type,
        max_concurrent_batches=cfg.max_concurrent_batches,
        placement_group_config=pg,
        runtime_env={"env_vars": resolve_env(cfg.env)},
        should_continue_on_error=cfg.should_continue_on_error,
        log_engine_metrics=False,
        # The prompt is templated and tokenised by the request builder (it needed the token
        # counts for chunking anyway), and vLLM detokenises the answer itself.
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
    )


class VLLMPre:
    def __init__(self, sampling: SamplingConfig):
        self.s = sampling

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        params = {
            "temperature": float(row["temperature"]),
            "top_p": self.s.top_p,
            "repetition_penalty": self.s.repetition_penalty,
            "max_tokens": self.s.max_tokens,
        }
        if self.s.per_request_seed:
            params["seed"] = int(row["seed"])
        if self.s.ignore_eos:
            params["ignore_eos"] = True
        return {"tokenized_prompt": [int(x) for x in row["tokenized_prompt"]], "sampling_params": params}


class VLLMPost:
    def __init__(self, eos_ids: set[int], max_tokens: int):
        self.eos_ids, self.max_tokens = set(eos_ids), max_tokens

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        toks = list(row.get("generated_tokens") or [])
        out = {k: row[k] for k in _PASSTHROUGH}
        out.update(
            output_tokens=int(row.get("num_generated_tokens") or len(toks)),
            text=row.get("generated_text") or "",
            finish=finish_reason(toks, self.eos_ids, self.max_tokens),
            error="",
        )
        return out


_ENGINE_ERROR = "__inference_error__"  # set by ray.data.llm's engine UDF on a row that failed


def vllm_results(rows: list[dict[str, Any]], post: VLLMPost) -> pa.Table:
    """Result rows from the vLLM engine UDF's output rows: answers through ``post``; rows that
    failed inside the engine keep their request columns and carry the error."""
    out = []
    for r in rows:
        err = r.get(_ENGINE_ERROR) or ""
        out.append({**(post(r) if not err else {k: r.get(k) for k in _PASSTHROUGH}), _ENGINE_ERROR: err})
    return normalize_results(
        pa.Table.from_pylist(out, schema=RESULT_SCHEMA.append(pa.field(_ENGINE_ERROR, pa.string())))
    )


def normalize_results(batch: pa.Table) -> pa.Table:
    """Rows that failed inside ray.data.llm skip the postprocess and keep their own columns."""
    n = batch.num_rows
    cols = {}
    err = batch.column(_ENGINE_ERROR).to_pylist() if _ENGINE_ERROR in batch.column_names else [""] * n
    own_err = batch.column("error").to_pylist() if "error" in batch.column_names else [""] * n
    for f in RESULT_SCHEMA:
        if f.name == "error":
            cols["error"] = [a or b or "" for a, b in zip(err, own_err, strict=True)]
        elif f.name in batch.column_names:
            cols[f.name] = batch.column(f.name).to_pylist()
        else:
            cols[f.name] = [None] * n
    cols["text"] = [t or "" for t in cols["text"]]
    cols["output_tokens"] = [int(x or 0) for x in cols["output_tokens"]]
    cols["finish"] = [
        f or ("error" if e else "stop") for f, e in zip(cols["finish"], cols["error"], strict=True)
    ]
    return pa.table(cols, schema=RESULT_SCHEMA)


# ---- hf (transformers generate) --------------------------------------------------------


class HFGenerator:
    """Batched ``generate`` with left padding; one sampling seed per batch (HF has no per-row seed)."""

    def __init__(
        self,
        model_path: str,
        sampling: SamplingConfig,
        eos_ids: set[int],
        dtype: str = "float32",
        device: str = "auto",
        threads: int | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        # Default: Ray's OMP_NUM_THREADS (= the CPUs this actor reserved). More threads than
        # free cores makes OpenMP spin: 2 threads on a busy 2-core machine ran 10x slower.
        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.tok = AutoTokenizer.from_pretrained(model_path)
        self.model = (
            AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(device).eval()
        )
        self.pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else min(eos_ids)
        self.s, self.eos_ids = sampling, set(eos_ids)

    def __call__(self, batch: pa.Table) -> pa.Table:
        torch = self.torch
        rows = batch.to_pylist()
        out = []
        # Rows sharing a temperature share one generate call (retries run hotter).
        for temp in sorted({r["temperature"] for r in rows}):
            group = [r for r in rows if r["temperature"] == temp]
            width = max(len(r["tokenized_prompt"]) for r in group)
            ids = torch.full((len(group), width), self.pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(group):
                p = r["tokenized_prompt"]
                ids[i, width - len(p) :] = torch.tensor(p)
                mask[i, width - len(p) :] = 1
            torch.manual_seed(int(group[0]["seed"]))
            kwargs: dict[str, Any] = dict(
                max_new_tokens=self.s.max_tokens,
                repetition_penalty=self.s.repetition_penalty,
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.pad,
            )
            if self.s.ignore_eos:
                kwargs["min_new_tokens"] = self.s.max_tokens
            if temp > 0:
                kwargs.update(do_sample=True, temperature=temp, top_p=self.s.top_p)
            else:
                kwargs.update(do_sample=False)
            with torch.inference_mode():
                gen = (
                    self.model.generate(
                        input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs
                    )[:, width:]
                    .cpu()
                    .tolist()
                )
            for r, toks in zip(group, gen, strict=True):
                # Strip the padding after an early stop, keep the EOS for finish_reason.
                cut = next((j + 1 for j, t in enumerate(toks) if t in self.eos_ids), len(toks))
                toks = toks[:cut]
                out.append(
                    {
                        **{k: r[k] for k in _PASSTHROUGH},
                        "output_tokens": len(toks),
                        "text": self.tok.decode(toks, skip_special_tokens=True),
                        "finish": finish_reason(toks, self.eos_ids, self.s.max_tokens),
                        "error": "",
                    }
                )
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)


# ---- openai-compatible HTTP --------------------------------------------------------------


class OpenAIGenerator:
    """Sequential requests per actor, paced to ``requests_per_second / concurrency``."""

    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}

    def __init__(self, cfg: LLMConfig, sampling: SamplingConfig):
        import requests

        self.session = requests.Session()
        self.url = cfg.api_base.rstrip("/") + "/chat/completions"
        key = os.environ.get(cfg.api_key_env, "")
        self.headers = {
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {key}"} if key else {}),
        }
        self.model = cfg.api_model or cfg.model
        self.cfg, self.s = cfg, sampling
        self.interval = cfg.concurrency / cfg.requests_per_second
        self._last = 0.0

    def _pace(self) -> None:
        wait = self._last + self.interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        err = ""
        for attempt in range(self.cfg.max_retries + 1):
            self._pace()
            try:
                r = self.session.post(
                    self.url, headers=self.headers, data=json.dumps(body), timeout=self.cfg.timeout_s
                )
                if r.status_code == 200:
                    return r.json()
                err = f"HTTP {r.status_code}: {r.text[:200]}"
                if r.status_code not in self.RETRY_STATUS:
                    break
            except Exception as e:  # network errors are retried like 5xx
                err = f"{type(e).__name__}: {e}"
            time.sleep(min(30.0, 0.5 * 2**attempt) * (1 + random.random() / 4))
        raise RuntimeError(err)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = []
        for r in batch.to_pylist():
            body = {
                "model": self.model,
                "messages": json.loads(r["messages_json"]),
                "temperature": r["temperature"],
                "top_p": self.s.top_p,
                "max_tokens": self.s.max_tokens,
                "seed": int(r["seed"]),
            }
            if self.s.repetition_penalty != 1.0:
                body["repetition_penalty"] = self.s.repetition_penalty  # vLLM/TGI servers accept it
            base = {k: r[k] for k in _PASSTHROUGH}
            try:
                resp = self._post(body)
                choice = resp["choices"][0]
                usage = resp.get("usage") or {}
                out.append(
                    {
                        **base,
                        "prompt_tokens": int(usage.get("prompt_tokens") or r["prompt_tokens"]),
                        "output_tokens": int(usage.get("completion_tokens") or 0),
                        "text": (choice.get("message") or {}).get("content") or "",
                        "finish": "length" if choice.get("finish_reason") == "length" else "stop",
                        "error": "",
                    }
                )
            except Exception as e:
                out.append({**base, "output_tokens": 0, "text": "", "finish": "error", "error": str(e)[:500]})
        return pa.Table.from_pylist(out, schema=RESULT_SCHEMA)
