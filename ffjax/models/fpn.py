"""FPN on a ResNet-34 encoder, layer for layer as segmentation_models_pytorch's `FPN('resnet34')`.

The decoder (Kirillov et al.'s panoptic FPN head, as smp builds it): 1x1 lateral convolutions
bring the stride 4-32 encoder maps to 256 channels, added top-down with nearest 2x upsampling;
each pyramid level then goes through 3x3 conv + GroupNorm(32) + ReLU blocks (bilinear 2x
upsampling with aligned corners after each) down to 128 channels at stride 4; the four are
summed, a 1x1 head gives one logit per pixel, upsampled 4x bilinearly. 23,155,393 parameters
with one class, as `smp.FPN('resnet34', classes=1)`.

smp applies `Dropout2d(0.2)` to the summed map while training; this model does not (the models
carry no random state: the trainer's step is a pure function of the batch and parameters), so
`dropout` is not an option here and training differs from smp's in that one respect.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ffjax.models import layers
from ffjax.models.layers import IMAGENET_MEAN, IMAGENET_STD, normalize_images, pad_to_multiple, upsample_bilinear_aligned, upsample_nearest_2x
from ffjax.models.ops import STOCK, Ops
from ffjax.models.resnet import RESNET34_BLOCKS, ResNetBackbone

GN_GROUPS = 32
GN_EPSILON = 1e-5  # PyTorch's GroupNorm default


class ConvGNReLU(nnx.Module):
    """3x3 conv (no bias), GroupNorm, ReLU, then an optional bilinear 2x upsampling."""

    def __init__(self, in_features: int, out_features: int, upsample: bool, *, ops: Ops, rngs: nnx.Rngs, dtype, param_dtype):
        self.conv = layers.conv(in_features, out_features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, ops=ops,
                                dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = nnx.GroupNorm(out_features, num_groups=min(GN_GROUPS, out_features), epsilon=GN_EPSILON,
                                  dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.upsample = upsample

    def __call__(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.norm(self.conv(x)))
        return upsample_bilinear_aligned(x, 2) if self.upsample else x


class FPNDecoder(nnx.Module):
    """smp's FPN decoder over the stride 4, 8, 16 and 32 maps ("add" merge)."""

    def __init__(self, encoder_channels: Sequence[int], pyramid_channels: int = 256, segmentation_channels: int = 128, *,
                 ops: Ops = STOCK, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        """Builds the decoder.

        Args:
          encoder_channels: channels of the encoder's maps at strides 4, 8, 16, 32.
          pyramid_channels: width of the top-down pyramid (256 in smp).
          segmentation_channels: width of the per-level blocks and the output (128 in smp).
          ops, rngs, dtype, param_dtype: as the models' (`ffjax.models.create_model`).
        """
        kw = dict(ops=ops, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        c4, c8, c16, c32 = encoder_channels
        self.lateral = nnx.List([layers.conv(c, pyramid_channels, (1, 1), use_bias=True, **kw) for c in (c32, c16, c8, c4)])
        # Level k (stride 32, 16, 8, 4) is upsampled 3, 2, 1, 0 times to reach stride 4.
        self.blocks = nnx.List([
            nnx.List([ConvGNReLU(pyramid_channels if i == 0 else segmentation_channels, segmentation_channels, ups > 0, **kw)
                      for i in range(max(1, ups))])
            for ups in (3, 2, 1, 0)
        ])

    def __call__(self, features: Sequence[jax.Array]) -> jax.Array:
        """Maps at strides 4, 8, 16, 32 -> the merged map at stride 4."""
        c4, c8, c16, c32 = features
        pyramid = [self.lateral[0](c32)]
        for lateral, skip in zip(self.lateral[1:], (c16, c8, c4)):
            pyramid.append(upsample_nearest_2x(pyramid[-1]) + lateral(skip))
        out = None
        for blocks, level in zip(self.blocks, pyramid):
            for block in blocks:
                level = block(level)
            out = level if out is None else out + level
        return out


class FPNResNet34(nnx.Module):
    """FPN with a ResNet-34 encoder (smp `FPN('resnet34')`): 23,155,393 parameters."""

    task = "segmentation"
    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def __init__(
        self,
        *,
        pyramid_channels: int = 256,
        segmentation_channels: int = 128,
        encoder_width: float = 1.0,
        stage_blocks: Sequence[int] = RESNET34_BLOCKS,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the model.

        Args:
          pyramid_channels: width of the top-down pyramid (256 is the reference).
          segmentation_channels: width of the per-level blocks (128 is the reference).
          encoder_width: ResNet channel multiplier (1.0 is the reference).
          stage_blocks: BasicBlocks per ResNet stage ((3, 4, 6, 3) is ResNet-34).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        kw = dict(ops=ops, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.encoder = ResNetBackbone(stage_blocks=stage_blocks, width=encoder_width, **kw)
        self.decoder = FPNDecoder(self.encoder.feature_channels[1:], pyramid_channels, segmentation_channels, **kw)
        self.head = layers.conv(segmentation_channels, 1, (1, 1), use_bias=True, **kw)
        self.dtype = dtype

    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Segments manipulated pixels.

        Args:
          images: float RGB in [0, 1], [B, H, W, 3] (other sides than multiples of 32 are
            padded to one and the logits cropped back: `layers.pad_to_multiple`).
          train: training mode for BatchNorm.

        Returns:
          float32 logits [B, H, W, 1].
        """
        x = normalize_images(images, self.input_mean, self.input_std, self.dtype)
        h, w = x.shape[1:3]
        x = self.decoder(self.encoder(pad_to_multiple(x, 32), train)[1:])
        return upsample_bilinear_aligned(self.head(x), 4)[:, :h, :w].astype(jnp.float32)
