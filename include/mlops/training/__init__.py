"""Training: the entrypoint (``python -m mlops.training``), evaluation, the artifact contract."""
