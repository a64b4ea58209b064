"""Profile generation speed: (a) the Ray Data + vLLM pipeline, (b) bare vLLM ``LLM.generate``,
(c) the pipeline with the hf backend, on the same prompts and model.

Every answer runs to ``--max-tokens`` (ignore_eos), one request per user (truncate mode, no
retries), so all three do the same work. Each part runs in its own process (vLLM engines and
Ray do not share a process well). Prints a table and writes JSON.

    .venv/bin/python benchmarks/profile_throughput.py --users 64 --max-tokens 64

Startup is reported apart: (a) and (c) times are a whole pipeline round, which includes
starting the engine inside its actor (and importing vLLM there); (b) is shown with and
without its start-up (``import vllm`` plus ``LLM(...)``). The pipeline's own stages (Ray start,
time to the first result, assembly) are in the JSON's ``pipeline_stages``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "UCD_BENCH_RESULT "


def _overrides(args) -> list[str]:
    return [
        f"limit_users={args.users}",
        "chunking.mode=truncate",
        "checks.retries=0",
        f"sampling.max_tokens={args.max_tokens}",
        "sampling.ignore_eos=true",
        "tracking.enabled=false",
        f"llm.batch_size={args.batch_size}",
        *args.set,
    ]


def _cfg(args):
    from ucd.profiles.config import load_profile_config

    return load_profile_config(args.config, _overrides(args))


def part_prompts(args) -> dict:
    """Token ids of every user's request, exactly as the pipeline builds them."""
    from ucd.llm.prepare import resolve_llm_path
    from ucd.pipelines.profile_job import select_users
    from ucd.profiles.chunking import Budget
    from ucd.profiles.history import load_prepared
    from ucd.profiles.prompts import templates
    from ucd.profiles.requests import RequestBuilder

    cfg = _cfg(args)
    prepared = load_prepared(args.data)
    domain = prepared.domain if cfg.prompt.domain == "auto" else cfg.prompt.domain
    model = resolve_llm_path(cfg.llm.model)
    rb = RequestBuilder(
        model,
        prepared.item_text,
        templates(domain, cfg.prompt.style, cfg.prompt.facts),
        Budget(cfg.llm.max_model_len, cfg.sampling.max_tokens, cfg.chunking.max_chunks, "truncate"),
        cfg.sampling,
        cfg.checks,
        cfg.prompt.field_chars,
        cfg.prompt.max_items,
        cfg.prompt.system_role,
        cfg.prompt.list_items,
    )
    t = select_users(prepared, cfg)
    ids = []
    for u, h, r in zip(
        *(t.column(c).to_pylist() for c in ("user_id", "history", "history_rating")), strict=True
    ):
        ids.append(rb.requests_for(u, h, r, {})[0]["tokenized_prompt"])
    return {"model": model, "prompt_ids": ids}


def part_bare(args) -> dict:
    from ucd.llm.backends import resolve_env, vllm_processor_kwargs

    cfg = _cfg(args)
    p = json.loads(Path(args.prompts).read_text())
    os.environ.update(resolve_env(cfg.llm.env))
    engine = vllm_processor_kwargs(cfg.llm, p["model"])["engine_kwargs"]
    engine.pop("task_type", None)
    # The pipeline's LLM actor imports vLLM inside its timed round, so bare vLLM's start-up
    # counts the import too (about 10 s on 2 cores; left out before 2026-11-27).
    t0 = time.perf_counter()
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    imported = time.perf_counter() - t0
    llm = LLM(model=p["model"], **engine)
    start = time.perf_counter() - t0
    sp = SamplingParams(
        temperature=cfg.sampling.temperature,
        top_p=cfg.sampling.top_p,
        repetition_penalty=cfg.sampling.repetition_penalty,
        max_tokens=cfg.sampling.max_tokens,
        ignore_eos=True,
    )
    t1 = time.perf_counter()
    outs = llm.generate([TokensPrompt(prompt_token_ids=x) for x in p["prompt_ids"]], sp, use_tqdm=False)
    gen = time.perf_counter() - t1
    return {
        "import_s": imported,
        "engine_start_s": start,
        "generate_s": gen,
        "prompt_tokens": sum(len(x) for x in p["prompt_ids"]),
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outs),
        "users": len(outs),
    }


def part_pipeline(args, backend: str) -> dict:
    from ucd.pipelines.profile_job import run_profile_job
    from ucd.profiles.config import load_profile_config

    cfg = load_profile_config(
        args.config, [*_overrides(args), f"llm.backend={backend}", "ray.object_store_memory=500000000"]
    )
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = run_profile_job(cfg, args.data, out, log=lambda *_: None)
        wall = time.perf_counter() - t0
        summary = json.loads((Path(out) / "summary.json").read_text())
    return {
        "wall_s": wall,
        "round_s": sum(res.extra["round_seconds"]),
        "prompt_tokens": res.extra["progress"]["prompt_tokens"],
        "output_tokens": res.extra["progress"]["output_tokens"],
        "users": summary["users"],
        "counts": res.counts,
        "stages": res.extra["stages"],
    }


def _child(args, part: str, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--part", part, *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"part {part} failed:\n{r.stderr[-4000:]}")
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(MARK)]
    if not lines:
        raise SystemExit(f"part {part} printed no result:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return json.loads(lines[-1][len(MARK) :])


def _rates(d: dict, seconds: float) -> dict:
    return {
        "seconds": round(seconds, 2),
        "users_per_s": round(d["users"] / seconds, 3),
        "output_tokens_per_s": round(d["output_tokens"] / seconds, 1),
        "total_tokens_per_s": round((d["prompt_tokens"] + d["output_tokens"]) / seconds, 1),
    }


def _bare_s(b: dict) -> float:
    """Bare vLLM's time including its start-up (import and engine)."""
    return b["engine_start_s"] + b["generate_s"]


def _median(runs: list[dict], seconds) -> dict:
    """The run with the median time (the lower middle one of an even count)."""
    return sorted(runs, key=seconds)[(len(runs) - 1) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", help="prepared dataset (default: ML-100K prepared into a temp folder)")
    ap.add_argument("--config")
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run bare vLLM and the pipeline this many times each, in alternating order; the "
        "table shows the median run of each (one run's ratio moved 0.86 -> 0.71 between two "
        "back-to-back runs on this machine)",
    )
    ap.add_argument("--json", default=str(ROOT / "benchmarks/results/profile_throughput.json"))
    ap.add_argument("--part", choices=["prompts", "bare", "vllm", "hf"])
    ap.add_argument("--prompts")
    args = ap.parse_args()

    if args.part:
        out = {"prompts": part_prompts, "bare": part_bare}.get(args.part)
        res = out(args) if out else part_pipeline(args, args.part)
        # vLLM and Ray also write to stdout: the parent looks for this marked line.
        print(MARK + json.dumps(res), flush=True)
        return

    tmp = Path(tempfile.mkdtemp(prefix="ucd-bench-"))
    if not args.data:
        from ucd.data.prepare import prepare_named

        args.data = str(prepare_named("ml-100k", tmp / "ml-100k", log=lambda *_: None))
    common = [
        "--data",
        args.data,
        "--users",
        str(args.users),
        "--max-tokens",
        str(args.max_tokens),
        "--batch-size",
        str(args.batch_size),
        *sum((["--set", s] for s in args.set), []),
    ]
    if args.config:
        common += ["--config", args.config]
    prompts = _child(args, "prompts", common)
    pfile = tmp / "prompts.json"
    pfile.write_text(json.dumps(prompts))

    bares, pipes = [], []
    for i in range(max(1, args.repeats)):
        # Alternate which goes first, so neither always gets the colder caches.
        for part in ("bare", "vllm") if i % 2 == 0 else ("vllm", "bare"):
            if part == "bare":
                bares.append(_child(args, "bare", [*common, "--prompts", str(pfile)]))
            else:
                pipes.append(_child(args, "vllm", common))
    bare = _median(bares, _bare_s)
    pipe = _median(pipes, lambda p: p["round_s"])
    hf = None if args.skip_hf else _child(args, "hf", common)

    rows = {
        "a_pipeline_vllm": _rates(pipe, pipe["round_s"]),
        "b_bare_vllm_incl_start": _rates(bare, _bare_s(bare)),
        "b_bare_vllm_generate_only": _rates(bare, bare["generate_s"]),
    }
    if hf:
        rows["c_pipeline_hf"] = _rates(hf, hf["round_s"])
    ratios = {
        "a_over_b_incl_start": round(
            rows["a_pipeline_vllm"]["total_tokens_per_s"]
            / rows["b_bare_vllm_incl_start"]["total_tokens_per_s"],
            3,
        ),
        "a_over_b_generate_only": round(
            rows["a_pipeline_vllm"]["total_tokens_per_s"]
            / rows["b_bare_vllm_generate_only"]["total_tokens_per_s"],
            3,
        ),
    }
    if hf:
        ratios["a_over_c"] = round(
            rows["a_pipeline_vllm"]["total_tokens_per_s"] / rows["c_pipeline_hf"]["total_tokens_per_s"], 3
        )
    result = {
        "users": args.users,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "prompt_tokens": bare["prompt_tokens"],
        "vllm_import_s": round(bare["import_s"], 1),
        "engine_start_s": round(bare["engine_start_s"], 1),
        "pipeline_wall_s": round(pipe["wall_s"], 1),
        # (a) is the pipeline's round: Ray's own start and the final assembly are listed here.
        "pipeline_stages": pipe["stages"],
        "rows": rows,
        "ratios": ratios,
        "overrides": args.set,
        "repeats": [
            {
                "bare_incl_start_s": round(_bare_s(b), 1),
                "pipeline_round_s": round(p["round_s"], 1),
                "ratio": round(_bare_s(b) / p["round_s"], 3),
            }
            for b, p in zip(bares, pipes, strict=True)
        ],
        "target": "a_over_b >= 0.85 (pipeline overhead under 15%); a_over_c well above 1",
        "cpu_count": os.cpu_count(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print(f"{'setting':28s} {'seconds':>8s} {'users/s':>8s} {'out tok/s':>10s} {'total tok/s':>12s}")
    for k, v in rows.items():
        print(
            f"{k:28s} {v['seconds']:8.1f} {v['users_per_s']:8.3f} {v['output_tokens_per_s']:10.1f} {v['total_tokens_per_s']:12.1f}"
        )
    for k, v in ratios.items():
        print(f"{k:28s} {v:.3f}")
    if len(result["repeats"]) > 1:
        print("each repeat, a/b incl. start: " + ", ".join(str(r["ratio"]) for r in result["repeats"]))
    st = pipe["stages"]
    print(
        f"bare vLLM: import {bare['import_s']:.1f}s, engine start {bare['engine_start_s']:.1f}s (incl. import), "
        f"generate {bare['generate_s']:.1f}s | pipeline: ray start {st['ray_start_s']}s, round "
        f"{st['rounds'][0]['seconds']}s (first result after {st['rounds'][0]['first_result_s']}s), "
        f"assemble {st['assemble_s']}s"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
