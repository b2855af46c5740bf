"""The drift statistics library: reference profiles, tests, detection, the HTML report.

:mod:`~mlops.drift.profile` (the reference profile and its JSON format), :mod:`~mlops.drift.stats`
(KS, PSI, chi-square, Jensen-Shannon, Benjamini-Hochberg), :mod:`~mlops.drift.detect` (thresholds,
``detect``, ``DriftResult``), :mod:`~mlops.drift.report` (HTML), :mod:`~mlops.drift.cli`
(``mlops drift``). numpy, scipy and pandas are imported when used.

Re-exported here: what the DAGs use.
"""

from __future__ import annotations

from mlops.drift.detect import DriftThresholds

__all__ = ["DriftThresholds"]
