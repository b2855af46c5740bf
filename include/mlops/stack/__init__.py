"""The embedded local stack of ``make up``: Airflow, MLflow, Prometheus parts as local processes."""
