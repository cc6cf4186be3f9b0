"""Test set-up shared by every test: 8 virtual CPU devices, set before JAX is imported."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TFDS probes for TensorFlow and GCS at import; neither is wanted here.
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")

import jax  # noqa: E402

# A persistent compilation cache makes reruns of the suite (and of the same shapes across
# tests in separate processes) skip the 10-20 s compiles of the small models.
_CACHE = os.environ.get(
    "FFJAX_TEST_COMPILATION_CACHE", os.path.join(os.path.dirname(__file__), "..", ".jax_cache")
)
jax.config.update("jax_compilation_cache_dir", os.path.abspath(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
