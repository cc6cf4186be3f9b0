"""The tests' persistent compilation cache (conftest, multihost workers, fresh CLI processes).

Reruns of the suite, and the same programs compiled by separate processes and tests, skip the
10-20 s compiles of the small models.

Under a device mesh, the CPU kernels are `custom_partitioning` calls whose HLO carries a
pointer to their Python partitioning callback: a new value in every process, so no cache key
ever matched (every train step compiled anew, measured: 81 compiles, 15 s of a 25 s
two-step worker). JAX can leave that pointer out of the key; the callback is then identified
by the code that defines it, so the cache folder is named after a hash of that code (and of
the kernels): an edit there starts a fresh folder instead of reusing stale executables.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PLATFORM = ROOT / "ffjax" / "platform"


def folder() -> str:
    """`$FFJAX_TEST_COMPILATION_CACHE` or `.jax_cache`, then a folder per platform-code hash."""
    base = os.environ.get("FFJAX_TEST_COMPILATION_CACHE", str(ROOT / ".jax_cache"))
    digest = hashlib.sha256()
    for path in sorted(_PLATFORM.rglob("*")):
        if path.suffix in (".py", ".cc", ".h"):
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return os.path.join(os.path.abspath(base), digest.hexdigest()[:16])


def settings() -> dict[str, str]:
    """The cache settings as environment variables, for a fresh process (JAX reads them at start)."""
    return {
        "JAX_COMPILATION_CACHE_DIR": folder(),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_REMOVE_CUSTOM_PARTITIONING_PTR_FROM_CACHE_KEY": "true",
    }


def enable() -> None:
    """Turns the cache on in this process (after `import jax`)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", folder())
    # Every program, even the 0.02-0.05 s ones (orbax slices each array eagerly when it saves):
    # reading them back is faster than compiling them again in every process.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_remove_custom_partitioning_ptr_from_cache_key", True)
