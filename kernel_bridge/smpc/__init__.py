"""Secure multi-party computation: SPDZ-style additive sharing over Z_2^64 with a dealer."""
