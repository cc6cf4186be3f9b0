"""U-Net decoder over a pretrained-style encoder, as segmentation_models_pytorch's `Unet`.

Design (smp defaults): five decoder stages with 256, 128, 64, 32, 16 channels; each stage
upsamples 2x (nearest), concatenates the encoder skip of that stride (none at full size) and
applies two 3x3 conv-BN-ReLU without conv bias; no centre block; a 3x3 conv with bias maps
the last 16 channels to one logit per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ffjax.models import layers
from ffjax.models.layers import (
    HALF_MEAN,
    HALF_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ConvBNReLU,
    normalize_images,
    pad_to_multiple,
    upsample_nearest_2x,
)
from ffjax.models.ops import STOCK, Ops
from ffjax.models.resnet import RESNET34_BLOCKS, ResNetBackbone
from ffjax.models.xception import XceptionBackbone

DECODER_CHANNELS = (256, 128, 64, 32, 16)


class DecoderBlock(nnx.Module):
    """Nearest 2x upsample, concatenate the skip (if any), two 3x3 conv-BN-ReLU."""

    def __init__(
        self,
        in_features: int,
        skip_features: int,
        out_features: int,
        *,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the block.

        Args:
          in_features: channels coming up from the coarser stage.
          skip_features: channels of the encoder skip (0 for none).
          out_features: output channels.
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        kw = dict(ops=ops, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = ConvBNReLU(in_features + skip_features, out_features, 3, **kw)
        self.conv2 = ConvBNReLU(out_features, out_features, 3, **kw)

    def __call__(self, x: jax.Array, skip: jax.Array | None, train: bool) -> jax.Array:
        x = upsample_nearest_2x(x)
        if skip is not None:
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
        return self.conv2(self.conv1(x, train), train)


class UNetDecoder(nnx.Module):
    """Five `DecoderBlock`s from stride 32 back to full resolution."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int] = DECODER_CHANNELS,
        *,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the decoder.

        Args:
          encoder_channels: channels of the encoder maps at strides 2, 4, 8, 16, 32.
          decoder_channels: output channels of the five stages, coarse to fine.
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if len(encoder_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError(
                "the U-Net decoder needs 5 encoder maps (strides 2..32) and 5 decoder_channels; "
                f"got {tuple(encoder_channels)} and {tuple(decoder_channels)}"
            )
        if min(decoder_channels) < 1:
            raise ValueError(f"decoder_channels must be >= 1; got {tuple(decoder_channels)}")
        coarse_first = list(encoder_channels)[::-1]
        in_channels = [coarse_first[0], *decoder_channels[:-1]]
        skip_channels = [*coarse_first[1:], 0]
        self.blocks = nnx.List(
            [
                DecoderBlock(cin, cskip, cout, ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
                for cin, cskip, cout in zip(in_channels, skip_channels, decoder_channels)
            ]
        )

    def __call__(self, features: Sequence[jax.Array], train: bool) -> jax.Array:
        coarse_first = list(features)[::-1]
        x = coarse_first[0]
        for block, skip in zip(self.blocks, [*coarse_first[1:], None]):
            x = block(x, skip, train)
        return x


class EncoderUNet(nnx.Module):
    """An encoder with five feature maps (strides 2..32), the smp U-Net decoder and head.

    Subclasses pick the encoder and declare its `input_mean` / `input_std`.
    """

    task = "segmentation"
    input_mean: tuple[float, float, float]
    input_std: tuple[float, float, float]

    def __init__(
        self,
        encoder: nnx.Module,
        *,
        decoder_channels: Sequence[int] = DECODER_CHANNELS,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds decoder and head over `encoder`.

        Args:
          encoder: module with `feature_channels` (5 ints) whose call `(x, train)` returns the
            five maps at strides 2, 4, 8, 16, 32.
          decoder_channels: output channels of the five decoder stages, coarse to fine.
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        self.encoder = encoder
        self.decoder = UNetDecoder(
            encoder.feature_channels,
            decoder_channels,
            ops=ops,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        self.head = layers.conv(
            decoder_channels[-1],
            1,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=True,
            ops=ops,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
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
        x = self.decoder(self.encoder(pad_to_multiple(x, 32), train), train)
        return self.head(x)[:, :h, :w].astype(jnp.float32)


class XceptionUNet(EncoderUNet):
    """U-Net with an Xception encoder (smp `Unet('xception')`): 28,769,401 parameters."""

    input_mean = HALF_MEAN
    input_std = HALF_STD

    def __init__(
        self,
        *,
        decoder_channels: Sequence[int] = DECODER_CHANNELS,
        encoder_width: float = 1.0,
        middle_blocks: int = 8,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the model.

        Args:
          decoder_channels: decoder stage widths, coarse to fine.
          encoder_width: Xception channel multiplier (1.0 is the reference).
          middle_blocks: Xception middle-flow blocks (8 is the reference).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        encoder = XceptionBackbone(
            width=encoder_width,
            middle_blocks=middle_blocks,
            ops=ops,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        super().__init__(
            encoder, decoder_channels=decoder_channels, ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )


class ResNet34UNet(EncoderUNet):
    """U-Net with a ResNet-34 encoder (smp `Unet('resnet34')`): 24,436,369 parameters."""

    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def __init__(
        self,
        *,
        decoder_channels: Sequence[int] = DECODER_CHANNELS,
        encoder_width: float = 1.0,
        stage_blocks: Sequence[int] = RESNET34_BLOCKS,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the model.

        Args:
          decoder_channels: decoder stage widths, coarse to fine.
          encoder_width: ResNet channel multiplier (1.0 is the reference).
          stage_blocks: BasicBlocks per ResNet stage ((3, 4, 6, 3) is ResNet-34).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        encoder = ResNetBackbone(
            stage_blocks=stage_blocks,
            width=encoder_width,
            ops=ops,
            rngs=rngs,
            dtype=dtype,
            param_dtype=param_dtype,
        )
        super().__init__(
            encoder, decoder_channels=decoder_channels, ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )


class XceptionUNetTwoHead(XceptionUNet):
    """U-Net/Xception with a classification head on the encoder's deepest map (smp
    `Unet('xception', aux_params={'classes': 1})`): 28,771,450 parameters.

    One backbone, two outputs, so segmentation and classification are compared on the same
    encoder: `{'mask': [B, H, W, 1] pixel logits, 'frame': [B, 1] frame logit}`, the head
    being a global average pool and a linear layer (smp's aux head, without dropout). Its task
    (`segmentation_classification`) trains both.
    """

    task = "segmentation_classification"

    def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32, **kwargs):
        """Builds the model; the arguments are `XceptionUNet`'s."""
        super().__init__(rngs=rngs, dtype=dtype, param_dtype=param_dtype, **kwargs)
        self.frame_head = nnx.Linear(self.encoder.feature_channels[-1], 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        """{'mask': float32 [B, H, W, 1], 'frame': float32 [B, 1]} logits (see the class)."""
        x = normalize_images(images, self.input_mean, self.input_std, self.dtype)
        h, w = x.shape[1:3]
        features = self.encoder(pad_to_multiple(x, 32), train)
        frame = self.frame_head(jnp.mean(features[-1], axis=(1, 2)))
        mask = self.head(self.decoder(features, train))[:, :h, :w]
        return {"mask": mask.astype(jnp.float32), "frame": frame.astype(jnp.float32)}
