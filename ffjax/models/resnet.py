"""ResNet-34 backbone (He et al. 2016), layer for layer as torchvision's `resnet34` minus fc.

Used as the classifier `ResNet34` (timm `resnet34`), and as the encoder of `ResNet34UNet` and
`FPNResNet34`, with the skips that segmentation_models_pytorch takes:
stride 2 (after conv1/bn1/relu), 4 (layer1), 8 (layer2), 16 (layer3), 32 (layer4).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ffjax.models.layers import IMAGENET_MEAN, IMAGENET_STD, ConvBNReLU, normalize_images
from ffjax.models.ops import STOCK, Ops

RESNET34_BLOCKS = (3, 4, 6, 3)


class BasicBlock(nnx.Module):
    """Two 3x3 conv-BN layers plus the identity (or a strided 1x1 conv-BN), then ReLU."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        stride: int = 1,
        *,
        dilation: int = 1,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the block.

        Args:
          in_features: input channels.
          out_features: output channels.
          stride: stride of the first conv (2 opens a stage).
          dilation: dilation of both 3x3 convs (a stage kept at its input's resolution).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        kw = dict(ops=ops, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = ConvBNReLU(in_features, out_features, 3, stride, dilation=dilation, **kw)
        self.conv2 = ConvBNReLU(out_features, out_features, 3, 1, dilation=dilation, relu=False, **kw)
        if stride != 1 or in_features != out_features:
            self.downsample = ConvBNReLU(
                in_features, out_features, 1, stride, padding=0, relu=False, **kw
            )
        else:
            self.downsample = None

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = self.conv2(self.conv1(x, train), train)
        skip = x if self.downsample is None else self.downsample(x, train)
        return nnx.relu(y + skip)


class ResNetBackbone(nnx.Module):
    """A BasicBlock ResNet without pooling head; the default is ResNet-34."""

    def __init__(
        self,
        *,
        stage_blocks: Sequence[int] = RESNET34_BLOCKS,
        width: float = 1.0,
        output_stride: int = 32,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the backbone.

        Args:
          stage_blocks: BasicBlocks in layer1..layer4; (3, 4, 6, 3) is ResNet-34.
          width: channel multiplier on (64, 128, 256, 512); 1.0 is the reference.
          output_stride: 32, or 16 to keep layer4 at stride 16 with its 3x3 convs dilated 2
            (smp's `make_dilated`, as DeepLabV3+ asks); the parameters are the same.
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if len(stage_blocks) != 4 or min(stage_blocks) < 1:
            raise ValueError(
                f"ResNet stage_blocks must be four counts >= 1 (ResNet-34: {RESNET34_BLOCKS}); "
                f"got {tuple(stage_blocks)}"
            )
        if not width > 0:
            raise ValueError(f"ResNet width must be > 0 (1.0 is the reference); got {width}")
        if output_stride not in (16, 32):
            raise ValueError(f"ResNet output_stride must be 16 or 32; got {output_stride}")
        widths = [max(1, round(n * width)) for n in (64, 128, 256, 512)]
        kw = dict(ops=ops, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem = ConvBNReLU(3, widths[0], 7, 2, padding=3, **kw)
        layers = []
        cin = widths[0]
        for i, (n, cout) in enumerate(zip(stage_blocks, widths)):
            dilated = output_stride == 16 and i == 3
            stride = 1 if i == 0 or dilated else 2
            dilation = 2 if dilated else 1
            blocks = [BasicBlock(cin, cout, stride, dilation=dilation, **kw)]
            blocks += [BasicBlock(cout, cout, 1, dilation=dilation, **kw) for _ in range(n - 1)]
            layers.append(nnx.List(blocks))
            cin = cout
        self.layers = nnx.List(layers)
        self.max_pool = ops.max_pool_3x3
        self.feature_channels = (widths[0], *widths)

    def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
        """Computes the feature pyramid.

        Args:
          x: normalised images [B, H, W, 3].
          train: training mode for BatchNorm.

        Returns:
          Five maps at strides 2, 4, 8, 16, 32 (16 for the last with `output_stride=16`), with
          `feature_channels` channels.
        """
        x = self.stem(x, train)
        features = [x]
        x = self.max_pool(x, 2)
        for layer in self.layers:
            for block in layer:
                x = block(x, train)
            features.append(x)
        return features


class ResNet34(nnx.Module):
    """The ResNet-34 classifier (timm `resnet34`): backbone, global average pool, linear head.

    21,285,185 parameters with one output, as `timm.create_model('resnet34', num_classes=1)`.
    """

    task = "classification"
    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def __init__(
        self,
        num_outputs: int = 1,
        *,
        width: float = 1.0,
        stage_blocks: Sequence[int] = RESNET34_BLOCKS,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the classifier.

        Args:
          num_outputs: logits per image (1: sigmoid).
          width: channel multiplier (1.0 is the reference).
          stage_blocks: BasicBlocks per stage ((3, 4, 6, 3) is ResNet-34).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if num_outputs < 1:
            raise ValueError(f"ResNet34 num_outputs must be >= 1; got {num_outputs}")
        self.backbone = ResNetBackbone(
            stage_blocks=stage_blocks, width=width, ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype
        )
        self.fc = nnx.Linear(
            self.backbone.feature_channels[-1], num_outputs, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.dtype = dtype

    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Classifies images.

        Args:
          images: float RGB in [0, 1], [B, H, W, 3].
          train: training mode for BatchNorm.

        Returns:
          float32 logits [B, num_outputs].
        """
        x = normalize_images(images, self.input_mean, self.input_std, self.dtype)
        x = jnp.mean(self.backbone(x, train)[-1], axis=(1, 2))
        return self.fc(x).astype(jnp.float32)
