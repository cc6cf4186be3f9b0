"""XLA compile options that ffjax passes to the steps it compiles (train, eval, predict, bench).

On XLA:CPU one option: convolutions are left out of the YNNPACK library calls
(`xla_cpu_experimental_ynn_fusion_type` keeps matmuls and reductions there), so XLA runs them
with its Eigen convolutions instead. Those use every core; the YNNPACK calls ran each
convolution on one thread. Measured on the 2-core VM of docs/performance.md: a 3x3
convolution 8x64x64x64 -> 64 took 8.3 instead of 14.7 ms forward, its kernel gradient 15.5
instead of 64 ms; whole train steps 3-21% faster, eval steps 5-17%.

Only while a step's devices on this host are no more than its cores: with more (8 virtual
CPU devices on 2 cores, as in the tests) every device runs its own program at once, the
one-thread calls already keep the cores busy and Eigen's threads only contend
(unet_resnet34 train on 8 devices: 4587 ms with the option, 3548 without; on 2 devices 2562
vs 2979).

The options are passed per compile (`jax.jit(..., compiler_options=...)`), not through
XLA_FLAGS, so they reach ffjax's own steps wherever ffjax runs and nothing else in the
process. None is returned (XLA's defaults) off the CPU, with more local devices than cores,
when FFJAX_TUNE_XLA=0, when the user's XLA_FLAGS already set the option, or when this jaxlib
rejects it (checked once by compiling a tiny function; a warning says so).
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp

SWITCH = "FFJAX_TUNE_XLA"  # set to 0 to compile with XLA's defaults
YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS: dict[str, Any] = {
    # XLA's default also lists LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION.
    YNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def host_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def compiler_options(mesh: jax.sharding.Mesh | None = None) -> dict[str, Any] | None:
    """The options for `jax.jit(..., compiler_options=...)` of a step over `mesh`, or None.

    Args:
      mesh: the step's device mesh; None for a one-device step.
    """
    local_devices = 1 if mesh is None else len(mesh.local_devices)
    if local_devices > host_cores():
        return None
    return _backend_options()


@functools.cache
def _backend_options() -> dict[str, Any] | None:
    """The options for this backend and environment, checked once per process.

    Call `_backend_options.cache_clear()` after changing the environment (tests do).
    """
    if jax.default_backend() != "cpu" or os.environ.get(SWITCH, "1") == "0":
        return None
    if YNN_FUSION_TYPE in os.environ.get("XLA_FLAGS", ""):
        return None  # the user's own setting wins
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(jnp.zeros(2)).compile()
    except Exception as error:  # an XlaRuntimeError or ValueError naming the option
        warnings.warn(
            f"ffjax: this jaxlib ({jax.__version__}) rejects the XLA:CPU compile options "
            f"{CPU_OPTIONS} ({error}); compiling with XLA's defaults (slower convolutions). "
            f"Set {SWITCH}=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return dict(CPU_OPTIONS)
