"""Files the platform reads at run time: package data, found with :mod:`importlib.resources`.

They ship inside the ``mlops`` wheel next to the code that owns them, so an installed package (a
container, a pod, a venv outside any checkout) finds them; nothing here looks at a repository.

* ``mlops/config/models/*.yaml``: the built-in model configs;
* ``mlops/alerting/rules/``: the Prometheus alert rules (and their promtool tests);
* ``mlops/stack/templates/``: the Prometheus and Alertmanager configs of the local stack.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

ALERT_RULES = "mlops.rules.yml"


def _path(package: str, *parts: str) -> Path:
    # The package is installed as plain files (wheel or editable), so a Traversable is a real path:
    # Prometheus, promtool and Alertmanager are given file paths.
    return Path(str(files(package).joinpath(*parts)))


def builtin_models_dir() -> Path:
    """The model config files shipped with the package."""
    return _path("mlops.config", "models")


def alert_rules_dir() -> Path:
    """Folder of the platform's alert rule files (shipped with the package)."""
    return _path("mlops.alerting", "rules")


def alert_rules_file() -> Path:
    """The platform's alert rules: Prometheus loads them, the local alert source evaluates them."""
    return alert_rules_dir() / ALERT_RULES


def stack_template(name: str) -> Path:
    """A config template of the local stack (``prometheus.yml``, ``alertmanager.yml``)."""
    return _path("mlops.stack", "templates", name)
