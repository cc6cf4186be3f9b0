"""XLA:CPU speed work: operation formulations, native kernels, compile options, malloc settings."""
