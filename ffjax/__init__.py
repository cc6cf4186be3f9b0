"""ffjax: pixel-level face forgery localisation in JAX/Flax NNX."""

__version__ = "0.1.0"
