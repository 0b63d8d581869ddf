"""Code that runs inside a sandboxed session kernel (the worker's agent)."""
