"""New batches: reading, landing, Great Expectations validation, quarantine, DVC versioning."""
