"""Typed configuration of the profile job (``ucd profile``, ``jobs/profile.py``).

Defaults are the embedded CPU setting (SmolLM2 on vLLM's CPU build, MiniLM); a cluster run
changes only values (the shipped ``gpu`` profile config), never code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ucd.config import DEFAULTS, Strict, build_config, find_config
from ucd.tracking.runs import TrackingConfig

DEFAULT_CONFIG = DEFAULTS / "profile" / "cpu.yaml"


class PromptConfig(Strict):
    style: Literal["structured", "long"] = "structured"
    # auto: the prepared dataset's manifest says (movies / products / generic).
    domain: Literal["auto", "movies", "products", "generic"] = "auto"
    # Newest items kept when this cap (or the context) is shorter than the history.
    max_items: int | None = Field(default=None, ge=1)
    # Each " | "-separated field of an item's text is cut to this many characters.
    field_chars: int = Field(default=120, ge=8)
    # Gemma-style templates reject a system turn; fold it into the user turn then.
    system_role: bool = True
    # A block of counts computed from the listed items (genre/category/brand shares, decades,
    # rating spread) before the list: the "quantified" part of the structured profile.
    facts: bool = True
    # List only this many newest items one per line; the others kept by max_items appear in
    # the facts block only. Small models copy long lists instead of describing them.
    list_items: int | None = Field(default=None, ge=1)


class ChunkingConfig(Strict):
    # aggregate: a profile per chunk, then a merge prompt (the paper's default);
    # update: a running profile rewritten chunk by chunk; truncate: newest items that fit.
    mode: Literal["aggregate", "update", "truncate"] = "aggregate"
    # Older chunks beyond this are dropped (bounds LLM calls per user).
    max_chunks: int = Field(default=4, ge=1)


class SamplingConfig(Strict):
    # Low temperature and a repetition penalty: at 0.7 SmolLM2 degenerates for most users.
    temperature: float = Field(default=0.2, ge=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    repetition_penalty: float = Field(default=1.1, gt=0)
    max_tokens: int = Field(default=160, ge=1)
    seed: int = 0
    # A seed per request makes answers reproducible and retries differ. vLLM's CPU build
    # (0.32) kills its engine ("CPU Generator does not use offset") when a seeded request's
    # prefill is split across steps, so the CPU config turns this off (the engine's own RNG
    # still gives a retry a different sample).
    per_request_seed: bool = True
    # Benchmarks only: every answer runs to max_tokens, so backends do identical work.
    ignore_eos: bool = False


class ChecksConfig(Strict):
    min_chars: int = Field(default=40, ge=0)
    # Degenerate repetition: share of distinct word 3-grams below this...
    min_distinct_ngrams: float = Field(default=0.45, ge=0, le=1)
    # ...or one line repeated this many times.
    max_line_repeats: int = Field(default=3, ge=2)
    retries: int = Field(default=1, ge=0)
    # Greedy decoding would repeat itself on retry: retries sample at least this hot.
    retry_min_temperature: float = Field(default=0.3, ge=0)


class LLMConfig(Strict):
    backend: Literal["vllm", "hf", "openai"] = "vllm"
    # An alias of the packaged model (smollm2-135m-instruct), a local folder or a hub id.
    model: str = "smollm2-135m-instruct"
    # Tokenizer used for budgets and the chat template; empty: the model's.
    tokenizer: str = ""
    # Context used for prompt budgets (and vLLM's max_model_len).
    max_model_len: int = Field(default=2048, ge=128)
    batch_size: int = Field(default=16, ge=1)
    concurrency: int = Field(default=1, ge=1)
    # Per replica. num_gpus=0 gives vLLM a CPU-only placement bundle (else it asks for a GPU).
    num_cpus: float = Field(default=1, gt=0)
    num_gpus: float = Field(default=0, ge=0)
    accelerator_type: str | None = None
    tensor_parallel_size: int = Field(default=1, ge=1)
    dtype: str = "bfloat16"  # vLLM
    hf_dtype: str = "float32"  # hf backend (bf16 matmuls are slow on most CPUs)
    hf_device: str = "auto"
    hf_threads: int | None = None  # torch threads per hf actor; None: the CPUs it reserved
    max_concurrent_batches: int = Field(default=4, ge=1)
    should_continue_on_error: bool = True
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    # Set in the LLM workers; "all" as VLLM_CPU_OMP_THREADS_BIND means every local core
    # (fastest on an idle machine), "auto" is vLLM's own choice (one core of two).
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_text(cls, v: Any) -> Any:
        # Environment values are text; YAML and --set read `VLLM_CPU_KVCACHE_SPACE=4` as a number.
        if isinstance(v, dict):
            return {k: str(x).lower() if isinstance(x, bool) else str(x) for k, x in v.items()}
        return v

    # openai backend: base URL (http://host:port/v1), key from this env var, pacing.
    api_base: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    api_model: str = ""
    max_retries: int = Field(default=4, ge=0)
    requests_per_second: float = Field(default=4.0, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _openai_needs_url(self) -> LLMConfig:
        if self.backend == "openai" and not self.api_base:
            raise ValueError("llm.api_base is required for the openai backend")
        return self


class ReduceConfig(Strict):
    method: Literal["none", "pca"] = "none"
    dim: int = Field(default=64, ge=1)
    # L2-normalise again after the projection, so downstream distances stay comparable.
    renormalize: bool = True


class EmbedConfig(Strict):
    # "all-minilm-l6-v2" is the packaged default; else a sentence-transformers path / hub id.
    model: str = "all-minilm-l6-v2"
    # e5-style models expect "query: " / "passage: "; profiles are embedded in `role`.
    query_prefix: str = ""
    passage_prefix: str = ""
    role: Literal["query", "passage"] = "query"
    batch_size: int = Field(default=64, ge=1)
    concurrency: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=0.5, gt=0)
    num_gpus: float = Field(default=0, ge=0)
    device: str = "cpu"
    max_seq_length: int | None = Field(default=None, ge=8)
    # Profiles with these statuses are embedded; others get no vector.
    statuses: list[Literal["ok", "truncated", "failed"]] = Field(default_factory=lambda: ["ok"])
    reduce: ReduceConfig = Field(default_factory=ReduceConfig)

    @property
    def prefix(self) -> str:
        return self.query_prefix if self.role == "query" else self.passage_prefix


class RayConfig(Strict):
    # Empty: $RAY_ADDRESS (set by `ray job submit`) or a new local instance.
    address: str = ""
    num_cpus: int | None = None
    object_store_memory: int | None = None
    include_dashboard: bool = False


class ProfileJobConfig(Strict):
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    # Subset for quick runs: the first `limit_users` users (by id), or exactly these ids.
    limit_users: int | None = Field(default=None, ge=1)
    user_ids: list[int] | None = None
    # A random share of the users (Beauty: all 22k take hours on CPU). Drawn as the first
    # ceil(share * n) of one seeded permutation, so a larger share later contains the smaller
    # one and a rerun with it resumes: only the new users are asked.
    user_share: float | None = Field(default=None, gt=0, le=1)
    user_seed: int = 0
    # Ask nothing more: assemble the selected users whose answers are settled already, so a
    # long job stopped early (Beauty on CPU) is used at the coverage it reached. A later run
    # without it resumes the rest.
    assemble_only: bool = False
    # Results are flushed to a new shard file every `shard_rows` rows or `flush_seconds`.
    shard_rows: int = Field(default=64, ge=1)
    flush_seconds: float = Field(default=30.0, gt=0)
    # Profiles logged to MLflow as a readable sample.
    sample_size: int = Field(default=20, ge=0)


def load_profile_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ProfileJobConfig:
    """The given YAML, by path or shipped name (default: ``cpu``, the embedded CPU setting) <-
    ``key=value`` overrides.

    Keys a YAML leaves out take the code defaults above, not cpu.yaml's, so a cluster config
    never inherits CPU-only settings.
    """
    path = DEFAULT_CONFIG if path is None else find_config("profile", path)
    return build_config(ProfileJobConfig, path, overrides)
