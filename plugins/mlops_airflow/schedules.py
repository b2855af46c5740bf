"""Time schedules of the platform's DAGs: cron in UTC, and never a surprise run when a DAG is unpaused.

Airflow's ``CronTriggerTimetable`` without a start date runs the *past* cron point on unpausing when it
lies within a buffer: ``run_immediately=False`` (its default) still means "within a tenth of the period,
at least 5 minutes" in the locked Airflow version, so a daily DAG unpaused before 02:24 UTC started a
run for midnight (`make demo` between 00:00 and 02:24 UTC trained its first batch in that surprise run).
``run_immediately=timedelta(0)`` makes the first run the next cron point in the future.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable


def cron(expression: str) -> CronTriggerTimetable:
    """A cron expression or preset (``@daily``) in UTC; the first run after unpausing is the next one."""
    return CronTriggerTimetable(expression, timezone="UTC", run_immediately=timedelta(0))
