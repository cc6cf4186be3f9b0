"""The operations a model is built with, handed in by whoever builds it.

Some operations have a faster form on one platform than another (on XLA:CPU: the depthwise
convolution as shifted slices, a max-pool gradient without index arrays, native kernel
gradients). The models take them as one argument, `ops` (as flax's ResNet takes its `conv`),
and never look at the platform themselves; `ffjax.state.model_ops` picks the set once, from
the mesh's devices and the run config. `STOCK` is flax/lax's own operations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
from flax import nnx


def stock_max_pool_3x3(x: jax.Array, stride: int) -> jax.Array:
    """3x3 max pool with padding 1 (the ResNet stem's and Xception's block pools)."""
    return nnx.max_pool(x, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)))


@dataclasses.dataclass(frozen=True)
class Ops:
    """The operation set of a model. Every set computes the same function with the same
    parameters (a checkpoint trained with one loads into any other).

    Attributes:
      name: 'stock', 'xla' or 'native' (recorded, never branched on by the models).
      conv_general_dilated: what every `nnx.Conv` calls (`jax.lax.conv_general_dilated`'s
        signature).
      depthwise: `(x [B,H,W,C], kernel [kh,kw,1,C]) -> [B,H,W,C]`, stride 1, 'same', odd
        kernel; None for the grouped convolution (`feature_group_count`) of `nnx.Conv`.
      max_pool_3x3: `(x, stride) -> y`, the 3x3 pad-1 max pool.
    """

    name: str = "stock"
    conv_general_dilated: Callable = jax.lax.conv_general_dilated
    depthwise: Callable | None = None
    max_pool_3x3: Callable = stock_max_pool_3x3


STOCK = Ops()
