"""XLA compile options that ffjax passes to the steps it compiles (train, eval, predict, bench).

On XLA:CPU one option: convolutions are left out of the YNNPACK library calls
(`xla_cpu_experimental_ynn_fusion_type` keeps matmuls and reductions there), so XLA runs them
with its Eigen convolutions instead. Those use every core; the YNNPACK calls ran each
convolution on one thread. Measured on the 2-core VM of docs/performance.md: a 3x3
convolution 8x64x64x64 -> 64 took 8.3 instead of 14.7 ms forward, its kernel gradient 15.5
instead of 64 ms; train steps 15-21% faster (with the 1x1 and 3x3 matmul forms it made the
slower choice removed), eval steps 5-17%.

The options are passed per compile (`jax.jit(..., compiler_options=...)`), not through
XLA_FLAGS, so they reach ffjax's own steps wherever ffjax runs and nothing else in the
process. `ffjax.platform.selection.compiler_options(devices)` asks for them only for steps
on CPU devices. None is returned (XLA's defaults) when FFJAX_TUNE_XLA=0, when the user's
XLA_FLAGS already set the option, or when this jaxlib rejects it (checked once by compiling
a tiny function on a CPU device; a warning says so).
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


@functools.cache
def compiler_options() -> dict[str, Any] | None:
    """The options for `jax.jit(..., compiler_options=...)` of a CPU step, or None.

    The same with any number of devices: with 8 virtual CPU devices on 2 cores they made
    unet_resnet34 slower (train 4587 vs 3548 ms) but xception_cls faster (train 4620 vs
    6193 ms, separate runs): its 1x1 convolutions have slow YNNPACK kernel gradients.
    Cached for the process: call `compiler_options.cache_clear()` after changing the
    environment (tests do).
    """
    if os.environ.get(SWITCH, "1") == "0":
        return None
    if YNN_FUSION_TYPE in os.environ.get("XLA_FLAGS", ""):
        return None  # the user's own setting wins
    try:
        probe = jax.device_put(jnp.zeros(2), jax.devices("cpu")[0])
        jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(probe).compile()
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
