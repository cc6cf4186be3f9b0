"""DeepLabV3+ on a ResNet-34 encoder, layer for layer as segmentation_models_pytorch's
`DeepLabV3Plus('resnet34')` (Chen et al. 2018).

The encoder runs at output stride 16 (layer4 dilated 2). ASPP on its last map: a 1x1 branch,
three depthwise-separable 3x3 branches dilated 12, 24 and 36, and an image-pooling branch, each
to 256 channels with BatchNorm and ReLU, concatenated and projected to 256; a separable 3x3
follows. Upsampled 4x (bilinear, aligned corners) to stride 4, it is concatenated with layer1's
map reduced to 48 channels, fused by a separable 3x3, and a 1x1 head gives one logit per pixel,
upsampled 4x. 22,437,457 parameters with one class, as `smp.DeepLabV3Plus('resnet34', classes=1)`.

smp drops out half of the ASPP projection while training; this model does not (the models carry
no random state: the training step is a pure function of batch and parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ffjax.models import layers
from ffjax.models.layers import IMAGENET_MEAN, IMAGENET_STD, ConvBNReLU, SeparableConv, normalize_images, pad_to_multiple, upsample_bilinear_aligned
from ffjax.models.ops import STOCK, Ops
from ffjax.models.resnet import RESNET34_BLOCKS, ResNetBackbone

ATROUS_RATES = (12, 24, 36)
HIGHRES_CHANNELS = 48  # layer1's map, reduced (the DeepLabV3+ paper's choice)


class SeparableBNReLU(nnx.Module):
    """Depthwise-separable 3x3 (optionally dilated), BatchNorm, ReLU."""

    def __init__(self, in_features: int, out_features: int, dilation: int = 1, *, ops: Ops, rngs: nnx.Rngs, dtype, param_dtype):
        self.conv = SeparableConv(in_features, out_features, 3, dilation=dilation, ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.bn = layers.batch_norm(out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x), use_running_average=not train))


class ASPP(nnx.Module):
    """Atrous spatial pyramid pooling (separable branches), projected to `out_features`."""

    def __init__(self, in_features: int, out_features: int, rates: Sequence[int] = ATROUS_RATES, *, ops: Ops, rngs: nnx.Rngs,
                 dtype, param_dtype):
        kw = dict(ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.branch_1x1 = ConvBNReLU(in_features, out_features, 1, padding=0, **kw)
        self.branches = nnx.List([SeparableBNReLU(in_features, out_features, r, **kw) for r in rates])
        self.pooling = ConvBNReLU(in_features, out_features, 1, padding=0, **kw)
        self.project = ConvBNReLU((2 + len(rates)) * out_features, out_features, 1, padding=0, **kw)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        outs = [self.branch_1x1(x, train)] + [branch(x, train) for branch in self.branches]
        pooled = self.pooling(jnp.mean(x, axis=(1, 2), keepdims=True), train)
        outs.append(jnp.broadcast_to(pooled, outs[0].shape))  # a 1x1 map resized is a constant
        return self.project(jnp.concatenate(outs, axis=-1), train)


class DeepLabV3PlusResNet34(nnx.Module):
    """DeepLabV3+ with a ResNet-34 encoder (smp `DeepLabV3Plus('resnet34')`): 22,437,457 parameters."""

    task = "segmentation"
    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def __init__(
        self,
        *,
        decoder_channels: int = 256,
        atrous_rates: Sequence[int] = ATROUS_RATES,
        encoder_width: float = 1.0,
        stage_blocks: Sequence[int] = RESNET34_BLOCKS,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the model.

        Args:
          decoder_channels: ASPP and decoder width (256 is the reference).
          atrous_rates: the three separable branches' dilations ((12, 24, 36)).
          encoder_width: ResNet channel multiplier (1.0 is the reference).
          stage_blocks: BasicBlocks per ResNet stage ((3, 4, 6, 3) is ResNet-34).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        kw = dict(ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.encoder = ResNetBackbone(stage_blocks=stage_blocks, width=encoder_width, output_stride=16, **kw)
        channels = self.encoder.feature_channels
        self.aspp = ASPP(channels[-1], decoder_channels, atrous_rates, **kw)
        self.aspp_out = SeparableBNReLU(decoder_channels, decoder_channels, **kw)
        self.highres = ConvBNReLU(channels[1], HIGHRES_CHANNELS, 1, padding=0, **kw)
        self.fuse = SeparableBNReLU(decoder_channels + HIGHRES_CHANNELS, decoder_channels, **kw)
        self.head = layers.conv(decoder_channels, 1, (1, 1), use_bias=True, ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.dtype = dtype

    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Segments manipulated pixels.

        Args:
          images: float RGB in [0, 1], [B, H, W, 3] (other sides than multiples of 16 are
            padded to one and the logits cropped back: `layers.pad_to_multiple`).
          train: training mode for BatchNorm.

        Returns:
          float32 logits [B, H, W, 1].
        """
        x = normalize_images(images, self.input_mean, self.input_std, self.dtype)
        h, w = x.shape[1:3]
        features = self.encoder(pad_to_multiple(x, 16), train)
        deep = upsample_bilinear_aligned(self.aspp_out(self.aspp(features[-1], train), train), 4)
        x = self.fuse(jnp.concatenate([deep, self.highres(features[1], train)], axis=-1), train)
        return upsample_bilinear_aligned(self.head(x), 4)[:, :h, :w].astype(jnp.float32)
