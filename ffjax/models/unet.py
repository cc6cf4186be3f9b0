"""U-Net (Ronneberger et al. 2015) with BatchNorm and padded convolutions.

Two changes from the paper, both common practice (e.g. milesial/Pytorch-UNet, whose
31,037,633 parameters the default configuration matches): 3x3 convolutions are padded so
the output has the input's size, and each is followed by BatchNorm (hence no conv bias).
Depth and base width are arguments, so the paper-scale model and tiny test/demo models are
the same class.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ffjax.models import layers
from ffjax.models.layers import HALF_MEAN, HALF_STD, ConvBNReLU, check_divisible, normalize_images
from ffjax.models.ops import STOCK, Ops


class DoubleConv(nnx.Module):
    """Two 3x3 conv-BN-ReLU layers."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the block.

        Args:
          in_features: input channels.
          out_features: output channels of both convolutions.
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        kw = dict(ops=ops, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = ConvBNReLU(in_features, out_features, 3, **kw)
        self.conv2 = ConvBNReLU(out_features, out_features, 3, **kw)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.conv2(self.conv1(x, train), train)


class UNet(nnx.Module):
    """Contracting path of `depth` 2x2 max pools, expanding path of 2x2 up-convolutions.

    Level i has `base_width * 2**i` channels; the paper is depth 4, base width 64.
    """

    task = "segmentation"
    input_mean = HALF_MEAN
    input_std = HALF_STD

    def __init__(
        self,
        *,
        depth: int = 4,
        base_width: int = 64,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the model.

        Args:
          depth: number of 2x downsamplings (4 in the paper); inputs must divide by 2**depth.
          base_width: channels at full resolution (64 in the paper).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if depth < 1 or base_width < 1:
            raise ValueError(
                f"UNet needs depth >= 1 and base_width >= 1 (paper: 4 and 64); got {depth} and "
                f"{base_width}"
            )
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.down = nnx.List(
            [DoubleConv(cin, cout, ops=ops, **kw) for cin, cout in zip([3, *widths[:-1]], widths)]
        )
        # Coarse to fine: up-convolution halves channels, then DoubleConv on [up, skip].
        self.up = nnx.List(
            [
                nnx.ConvTranspose(widths[i + 1], widths[i], (2, 2), strides=2, padding="VALID", **kw)
                for i in reversed(range(depth))
            ]
        )
        self.up_convs = nnx.List(
            [DoubleConv(2 * widths[i], widths[i], ops=ops, **kw) for i in reversed(range(depth))]
        )
        self.head = layers.conv(widths[0], 1, (1, 1), ops=ops, **kw)
        self.depth = depth
        self.dtype = dtype

    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Segments manipulated pixels.

        Args:
          images: float RGB in [0, 1], [B, H, W, 3], H and W divisible by 2**depth.
          train: training mode for BatchNorm.

        Returns:
          float32 logits [B, H, W, 1].
        """
        check_divisible(images, 2**self.depth, f"UNet(depth={self.depth})")
        x = normalize_images(images, self.input_mean, self.input_std, self.dtype)
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                skips.append(x)
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            x = block(x, train)
        for up, block, skip in zip(self.up, self.up_convs, reversed(skips)):
            x = block(jnp.concatenate([up(x), skip], axis=-1), train)
        return self.head(x).astype(jnp.float32)
