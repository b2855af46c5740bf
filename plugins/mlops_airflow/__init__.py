"""Airflow glue of the platform: hooks, compute backends, links. Imports ``mlops``; never the reverse."""
