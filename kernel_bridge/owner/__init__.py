"""Owner side (trusted): worker server, kernels, sandbox, gate, state, CLI."""
