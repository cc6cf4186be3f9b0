"""Xception (Chollet 2017), layer for layer as timm's `legacy_xception` (Cadene's port).

That port is the FF++ baseline classifier. conv1 and conv2 pad by `stem_padding`: 1 by
default (as segmentation_models_pytorch's Xception encoder does), so the stride-s feature map
of an H x H input is exactly H/s for H divisible by 32, which the U-Net needs; 0 is timm's
unpadded stem (the `xception_cls` config, so timm's ImageNet weights give timm's outputs).
At 299 px the final map is 10x10 either way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ffjax.models.layers import (
    HALF_MEAN,
    HALF_STD,
    ConvBNReLU,
    SeparableConv,
    batch_norm,
    normalize_images,
)
from ffjax.models.ops import STOCK, Ops


def _check_width(width: float, middle_blocks: int) -> None:
    if not width > 0:
        raise ValueError(f"Xception width must be > 0 (1.0 is the reference); got {width}")
    if middle_blocks < 0:
        raise ValueError(f"Xception middle_blocks must be >= 0 (8 is the reference); got {middle_blocks}")


class XceptionBlock(nnx.Module):
    """`reps` x (ReLU, separable conv, BN), optional 3x3/2 max pool, plus a residual path.

    The residual path is a strided 1x1 conv + BN whenever channels or resolution change.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        reps: int,
        stride: int = 1,
        *,
        start_with_relu: bool = True,
        grow_first: bool = True,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the block.

        Args:
          in_features: input channels.
          out_features: output channels.
          reps: number of separable convolutions.
          stride: 1, or 2 for a max-pooled block.
          start_with_relu: False only for the first block, which follows a ReLU already.
          grow_first: change the channel count in the first (True) or last separable conv.
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if grow_first:
            channels = [in_features] + [out_features] * reps
        else:
            channels = [in_features] * reps + [out_features]
        kw = dict(ops=ops, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.convs = nnx.List(
            [
                SeparableConv(cin, cout, 3, **kw)
                for cin, cout in zip(channels[:-1], channels[1:])
            ]
        )
        self.bns = nnx.List([batch_norm(c, dtype=dtype, param_dtype=param_dtype, rngs=rngs) for c in channels[1:]])
        if in_features != out_features or stride != 1:
            self.skip = ConvBNReLU(in_features, out_features, 1, stride, padding=0, relu=False, **kw)
        else:
            self.skip = None
        self.stride = stride
        self.max_pool = ops.max_pool_3x3
        self.start_with_relu = start_with_relu

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if i > 0 or self.start_with_relu:
                y = nnx.relu(y)
            y = bn(conv(y), use_running_average=not train)
        if self.stride != 1:
            y = self.max_pool(y, self.stride)
        skip = x if self.skip is None else self.skip(x, train)
        return y + skip


class XceptionBackbone(nnx.Module):
    """Xception without its classifier head: the feature maps at strides 2, 4, 8, 16, 32."""

    def __init__(
        self,
        *,
        width: float = 1.0,
        middle_blocks: int = 8,
        stem_padding: int = 1,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the backbone.

        Args:
          width: channel multiplier; 1.0 is the reference, small values give test-sized nets.
          middle_blocks: number of 728-channel middle-flow blocks (8 in the reference).
          stem_padding: padding of conv1 and conv2: 1 (smp's encoder) or 0 (timm's).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        _check_width(width, middle_blocks)

        def c(n: int) -> int:
            return max(1, round(n * width))

        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        bkw = dict(ops=ops, **kw)
        if stem_padding not in (0, 1):
            raise ValueError(f"Xception stem_padding must be 0 (timm) or 1 (smp); got {stem_padding}")
        self.conv1 = ConvBNReLU(3, c(32), 3, 2, padding=stem_padding, **bkw)
        self.conv2 = ConvBNReLU(c(32), c(64), 3, 1, padding=stem_padding, **bkw)
        # Entry flow.
        self.block1 = XceptionBlock(c(64), c(128), 2, 2, start_with_relu=False, **bkw)
        self.block2 = XceptionBlock(c(128), c(256), 2, 2, **bkw)
        self.block3 = XceptionBlock(c(256), c(728), 2, 2, **bkw)
        # Middle flow (timm's block4 ... block11).
        self.middle = nnx.List(
            [XceptionBlock(c(728), c(728), 3, 1, **bkw) for _ in range(middle_blocks)]
        )
        # Exit flow (timm's block12, conv3/bn3, conv4/bn4).
        self.block12 = XceptionBlock(c(728), c(1024), 2, 2, grow_first=False, **bkw)
        self.conv3 = SeparableConv(c(1024), c(1536), 3, **bkw)
        self.bn3 = batch_norm(c(1536), **kw)
        self.conv4 = SeparableConv(c(1536), c(2048), 3, **bkw)
        self.bn4 = batch_norm(c(2048), **kw)
        self.feature_channels = (c(64), c(128), c(256), c(728), c(2048))

    def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
        """Computes the feature pyramid.

        Args:
          x: normalised images [B, H, W, 3].
          train: use batch statistics (and update the running ones) in BatchNorm.

        Returns:
          Five maps at strides 2, 4, 8, 16, 32 with `feature_channels` channels. As in
          segmentation_models_pytorch, strides 4-16 are block outputs and stride 32 is bn4's
          output, both before the ReLU that the next layer applies.
        """
        s2 = self.conv2(self.conv1(x, train), train)
        s4 = self.block1(s2, train)
        s8 = self.block2(s4, train)
        s16 = self.block3(s8, train)
        for block in self.middle:
            s16 = block(s16, train)
        y = self.block12(s16, train)
        y = nnx.relu(self.bn3(self.conv3(y), use_running_average=not train))
        s32 = self.bn4(self.conv4(y), use_running_average=not train)
        return [s2, s4, s8, s16, s32]


class Xception(nnx.Module):
    """The FF++ Xception classifier: backbone, ReLU, global average pool, linear head."""

    task = "classification"
    input_mean = HALF_MEAN
    input_std = HALF_STD

    def __init__(
        self,
        num_outputs: int = 1,
        *,
        width: float = 1.0,
        middle_blocks: int = 8,
        stem_padding: int = 1,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the classifier.

        Args:
          num_outputs: logits per image: 1 (sigmoid) or 2 (softmax, FF++'s official head).
          width: channel multiplier (see `XceptionBackbone`).
          middle_blocks: middle-flow blocks (see `XceptionBackbone`).
          stem_padding: 1 (default) or 0 for timm's legacy_xception stem (see the module doc).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if num_outputs < 1:
            raise ValueError(f"Xception num_outputs must be >= 1; got {num_outputs}")
        self.backbone = XceptionBackbone(
            width=width,
            middle_blocks=middle_blocks,
            stem_padding=stem_padding,
            ops=ops,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.fc = nnx.Linear(
            self.backbone.feature_channels[-1],
            num_outputs,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.dtype = dtype

    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Classifies images.

        Args:
          images: float RGB in [0, 1], [B, H, W, 3] (299 x 299 in FF++).
          train: training mode for BatchNorm.

        Returns:
          float32 logits [B, num_outputs].
        """
        x = normalize_images(images, self.input_mean, self.input_std, self.dtype)
        x = nnx.relu(self.backbone(x, train)[-1])
        x = jnp.mean(x, axis=(1, 2))
        return self.fc(x).astype(jnp.float32)
