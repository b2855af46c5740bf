"""Drift checks of the served champion's traffic."""
