"""Training without Ray: configs, the epoch loop, checkpoints, the model folder, the run key."""
