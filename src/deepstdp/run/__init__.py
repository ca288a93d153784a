"""Stage 5, the run directory: `rundir` (the layout, every file name, the typed `Checkpoint`,
the start and resume rules, crash safety), `loaded` (a saved run as model, whitening and
clusterer: `load_run`), `tensorboard` (TensorBoard events)."""
