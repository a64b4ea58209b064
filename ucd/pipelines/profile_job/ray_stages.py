"""The Ray Data stages of a profile round around the LLM: request building, checks, embedding."""

from __future__ import annotations

from ucd.embed.embedder import EmbedBatch
from ucd.profiles.checks import check_table
from ucd.profiles.requests import RequestBuilder

# Light stages must not hold a whole CPU: on a 2-core machine the LLM replica and the
# embedder already reserve most of it, and a stage that cannot be scheduled stalls the stream.
LIGHT_CPU = 0.1
# The request builder holds a tokenizer and every item's text: ~450 MiB on ML-100K. Without a
# request Ray Data warned every 30 s that the stage might run out of memory (it suggested
# ~560 MiB); this leaves room for larger catalogues.
REQUEST_BUILDER_MEMORY = 768 * 2**20


def request_stage(ds, plan, step: int):
    """User states in, request rows out (one actor for the round)."""
    import ray

    cfg = plan.cfg
    return ds.map_batches(
        RequestBuilder,
        fn_constructor_kwargs=dict(
            item_text=plan.prepared.item_text,
            tokenizer_path=plan.tokenizer_path,
            tpl=plan.tpl,
            budget=plan.budget,
            sampling=cfg.sampling,
            checks=cfg.checks,
            field_chars=cfg.prompt.field_chars,
            max_items=cfg.prompt.max_items,
            system_role=cfg.prompt.system_role,
            list_items=cfg.prompt.list_items,
        ),
        compute=ray.data.ActorPoolStrategy(size=1),
        batch_size=step,
        batch_format="pyarrow",
        num_cpus=LIGHT_CPU,
        memory=REQUEST_BUILDER_MEMORY,
    )


def check_stage(ds, checks):
    """Adds each answer's verdict (status, reason) to the LLM result rows."""
    return ds.map_batches(check_table, fn_kwargs={"cfg": checks}, batch_format="pyarrow", num_cpus=LIGHT_CPU)


def embed_stage(ds, e, statuses, pool_size: int, batch_size: int | None):
    """Ray Data actor pool of :class:`EmbedBatch` over ``ds`` (pyarrow batches)."""
    import ray

    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs=dict(
            model=e.model,
            prefix=e.prefix,
            device=e.device,
            batch_size=e.batch_size,
            max_seq_length=e.max_seq_length,
            statuses=list(statuses),
        ),
        compute=ray.data.ActorPoolStrategy(size=pool_size),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_cpus=e.num_cpus,
        num_gpus=e.num_gpus,
    )
