"""The engine: meta-training, evaluation on fixed episodes, checkpoints and logs."""
