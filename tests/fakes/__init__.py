"""Test doubles of the platform's seams (kept out of the product package)."""
