"""Settings, defaults and model configs: what the platform is told (package data: models/*.yaml)."""
