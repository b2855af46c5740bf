"""Deployment of model versions: targets (local, kubernetes), rollout policy, analysis, smoke tests."""
