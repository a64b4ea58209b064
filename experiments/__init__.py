"""The quality experiments: baselines against distilled students on real data, one grid file per
dataset x protocol (``experiments/grids/``), one report per experiment.

    python -m experiments.run experiments/grids/ml-100k-loo.yaml --report ml100k-qwen-5seeds
    python -m experiments.summary      # the table of every committed comparison
    python -m experiments.publish      # docs/results.md and the README's headline block

Finished runs are recorded under ``experiments/results/runs/`` (committed) by their run key
(``ucd.train.run_key.record_key``), so a rerun trains only what is missing.
"""
