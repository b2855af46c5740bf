"""mlops: the domain package of the platform.

Plain Python that never imports airflow, so the same code runs in an Airflow task, a container,
a Kubernetes pod or a terminal (``mlops --help``).
"""

__version__ = "0.1.0"
