"""Hyper-parameter search with Optuna: the search space, the pruning callback (`project.tune` runs it)."""
