"""Choices made once per run from the devices of its mesh, never inside a model or a layer.

`select_cpu_ops` names the operation set the models are built with (`config.cpu_ops`):

| mode     | CPU mesh                                             | GPU/TPU mesh      |
|----------|------------------------------------------------------|-------------------|
| `auto`   | `native` when the kernels build, else `xla`          | `stock`           |
| `native` | the XLA formulations + native C++ kernels (or error) | error             |
| `xla`    | the XLA formulations (`platform/cpu/ops.py`)         | the same          |
| `stock`  | flax/lax's own operations only (passes `jax.jvp`)    | the same          |

`compiler_options` gives the XLA compile options of ffjax's jitted steps for those devices.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax

from ffjax.platform.cpu import kernels, xla_options

CPU_OPS_MODES = ("auto", "native", "xla", "stock")


def device_platform(devices: Iterable[jax.Device]) -> str:
    """The one platform ('cpu', 'gpu', 'tpu', ...) of `devices`; mixed platforms are an error."""
    platforms = sorted({d.platform for d in devices})
    if len(platforms) != 1:
        raise ValueError(f"A mesh must hold devices of one platform; these are {platforms or 'none'}.")
    return platforms[0]


def select_cpu_ops(mode: str, devices: Iterable[jax.Device]) -> str:
    """The operation set ('native', 'xla' or 'stock') for `config.cpu_ops=mode` on `devices`.

    Builds the native kernels on first use when `mode` is 'auto' or 'native' on CPU (~3 s
    once per machine, cached; see `ffjax.platform.cpu.kernels`).

    Raises:
      ValueError: an unknown mode, or 'native' where the kernels cannot run (not a CPU mesh,
        FFJAX_CPU_KERNELS=0, or the build failed).
    """
    if mode not in CPU_OPS_MODES:
        raise ValueError(f"config.cpu_ops={mode!r}: expected one of {CPU_OPS_MODES}.")
    if mode in ("stock", "xla"):
        return mode
    platform = device_platform(devices)
    if platform != "cpu":
        if mode == "native":
            raise ValueError(
                f"config.cpu_ops='native': the native kernels run on CPU devices only, and this mesh has "
                f"{platform} devices. Use 'auto' (flax/lax's own operations there)."
            )
        return "stock"
    if kernels.available():
        return "native"
    if mode == "native":
        raise ValueError(
            f"config.cpu_ops='native' needs the native CPU kernels, which are unavailable here "
            f"({kernels.ENV_SWITCH}=0, or their build failed: see the warning). Use 'auto' or 'xla'."
        )
    return "xla"


def compiler_options(devices: Iterable[jax.Device]) -> dict[str, Any] | None:
    """`jax.jit(..., compiler_options=...)` for a step that runs on `devices` (None: XLA's defaults)."""
    return xla_options.compiler_options() if device_platform(devices) == "cpu" else None
