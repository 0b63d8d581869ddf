"""Differential privacy run by the trusted worker: query documents and OpenDP mechanisms."""
