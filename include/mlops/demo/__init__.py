"""The demo: acts, the closed loop, data generators and client traffic (not needed by the product)."""
