"""EfficientNet-B4 (Tan & Le 2019) as timm's classifier and as smp's U-Net encoder.

The backbone of the DFDC winners and of DeepfakeBench's strongest baselines. Two references
with the same blocks and channels (B4: width 1.4, depth 1.8, 32 MBConv blocks, stem 48 and
head 1792 channels) that differ in three details, each an argument here:

- timm `efficientnet_b4`: PyTorch's symmetric padding (k // 2), BatchNorm epsilon 1e-5 and
  momentum 0.1; the classifier `EfficientNetB4` (17,550,409 parameters with one output).
- smp `Unet('efficientnet-b4')` (Luke Melas-Kyriazi's implementation): TensorFlow's 'SAME'
  padding computed once for a 380 px input (`Conv2dStaticSamePadding`; a stride-2 3x3 pads
  (0, 1), not (1, 1)), BatchNorm epsilon 1e-3 and momentum 0.01; `EfficientNetB4UNet`
  (20,225,689). smp's encoder keeps the classifier's 1x1 head convolution, unused by the
  U-Net: it is kept here too (its parameters count and an smp file loads whole).

Each MBConv block: 1x1 expansion (not in the first stage) - depthwise kxk - squeeze and
excitation (reduced to a quarter of the block's input channels) - 1x1 projection, SiLU
after the first two, a residual where shape allows. The stride-1 depthwise convolutions take
`ops.depthwise` (the CPU fast path Xception's take), and so do the four stride-2 ones (every
other output of the stride-1 form; `MBConv._depthwise`). Both references drop whole residual branches at random while training
(stochastic depth; smp's rate 0.2) and timm drops the pooled features; these models carry no
random state, so the step stays a pure function of batch and parameters, and neither is done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes as nnx_dtypes

from ffjax.models import layers
from ffjax.models.encoder_unet import DECODER_CHANNELS, EncoderUNet
from ffjax.models.layers import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from ffjax.models.ops import STOCK, Ops

# The B0 stages (expansion, kernel, stride, output channels, repeats); B4 scales them.
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
B4_WIDTH = 1.4
B4_DEPTH = 1.8
SE_RATIO = 0.25
SMP_STATIC_SIZE = 380  # the input size smp's B4 computes its static 'same' paddings for


def round_channels(channels: float, width: float) -> int:
    """Channels scaled by `width`, to a multiple of 8, never below 90 % (both references)."""
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def static_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding (before, after) for a `size` input (the smaller half first)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBNAct(nnx.Module):
    """Convolution without bias, BatchNorm, optional SiLU."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 1, stride: int = 1, *,
                 padding: tuple[int, int] = (0, 0), groups: int = 1, act: bool = True, bn_epsilon: float,
                 bn_momentum: float, ops: Ops, rngs: nnx.Rngs, dtype, param_dtype):
        self.conv = layers.conv(in_features, out_features, (kernel_size, kernel_size), strides=stride,
                                padding=(padding, padding), feature_group_count=groups, use_bias=False, ops=ops,
                                dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bn = nnx.BatchNorm(out_features, momentum=bn_momentum, epsilon=bn_epsilon, dtype=dtype,
                                param_dtype=param_dtype, rngs=rngs)
        self.act = act

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = self.bn(self.conv(x), use_running_average=not train)
        return nnx.silu(x) if self.act else x


class MBConv(nnx.Module):
    """Mobile inverted bottleneck with squeeze and excitation (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, expansion: int, kernel_size: int, stride: int, *,
                 padding: tuple[int, int], bn_epsilon: float, bn_momentum: float, ops: Ops, rngs: nnx.Rngs, dtype,
                 param_dtype):
        mid = in_features * expansion
        bn = dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum)
        kw = dict(ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.expand = ConvBNAct(in_features, mid, **bn, **kw) if expansion != 1 else None
        self.depthwise = ConvBNAct(mid, mid, kernel_size, stride, padding=padding, groups=mid, **bn, **kw)
        squeezed = max(1, int(in_features * SE_RATIO))
        self.se_reduce = nnx.Linear(mid, squeezed, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.se_expand = nnx.Linear(squeezed, mid, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.project = ConvBNAct(mid, out_features, act=False, **bn, **kw)
        self.residual = stride == 1 and in_features == out_features
        # The fast form computes the stride-1 'same' convolution (k // 2 on each side); a stride-2
        # one is every other output of it, from offset k // 2 - pad_before (see _depthwise).
        fast = padding == (kernel_size // 2,) * 2 if stride == 1 else padding[0] <= kernel_size // 2
        self.depthwise_fn = ops.depthwise if fast and stride in (1, 2) else None
        self.stride, self.padding, self.kernel_size = stride, padding, kernel_size
        self.dtype = dtype

    def _depthwise(self, y: jax.Array) -> jax.Array:
        """The depthwise convolution: the operation set's form where it applies, else grouped.

        At stride 2, output i reads input rows 2i - pad_before + t (t < k); the stride-1 'same'
        output at row j reads j - k // 2 + t, so it is that output at rows offset + 2i. Computing
        all rows and keeping every other one costs 4x the multiply-adds and still ran 10-35x
        faster on XLA:CPU than the grouped strided convolution, forward and backward
        (8 x 128 x 128 x 144, 3x3: 196 vs 2,072 ms; docs/performance.md).
        """
        h, w = y.shape[1:3]
        k, (before, after) = self.kernel_size, self.padding
        out_h, out_w = ((n + before + after - k) // self.stride + 1 for n in (h, w))
        offset = k // 2 - before
        # The rows kept must exist in the stride-1 output (an odd side with (0, 1) padding).
        if self.depthwise_fn is None or any(offset + self.stride * (o - 1) > n - 1 for o, n in ((out_h, h), (out_w, w))):
            return self.depthwise.conv(y)
        y, kernel = nnx_dtypes.promote_dtype((y, self.depthwise.conv.kernel[...]), dtype=self.dtype)
        y = self.depthwise_fn(y, kernel)
        if self.stride == 1:
            return y
        return y[:, offset::2, offset::2][:, :out_h, :out_w]

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = x if self.expand is None else self.expand(x, train)
        y = self._depthwise(y)
        y = nnx.silu(self.depthwise.bn(y, use_running_average=not train))
        gate = self.se_expand(nnx.silu(self.se_reduce(jnp.mean(y, axis=(1, 2)))))
        y = y * nnx.sigmoid(gate)[:, None, None, :]
        y = self.project(y, train)
        return x + y if self.residual else y


class EfficientNetBackbone(nnx.Module):
    """Stem, the MBConv blocks and the 1x1 head convolution (applied by `head`, not `__call__`)."""

    def __init__(
        self,
        *,
        width: float = B4_WIDTH,
        depth: float = B4_DEPTH,
        static_padding_size: int | None = None,
        bn_epsilon: float = layers.BN_EPSILON,
        bn_momentum: float = layers.BN_MOMENTUM,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the backbone.

        Args:
          width: channel multiplier on B0's (1.4 is B4).
          depth: block-count multiplier on B0's, rounded up per stage (1.8 is B4: 32 blocks).
          static_padding_size: None for PyTorch's symmetric padding (timm); an input size for
            TensorFlow's 'SAME' padding computed once for it (smp: 380), whatever the input.
          bn_epsilon: BatchNorm epsilon (timm 1e-5, smp 1e-3).
          bn_momentum: BatchNorm momentum of the running statistics (timm 0.9, smp 0.99).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if not width > 0 or not depth > 0:
            raise ValueError(f"EfficientNet width and depth must be > 0 (B4: 1.4, 1.8); got {width}, {depth}")
        bn = dict(bn_epsilon=bn_epsilon, bn_momentum=bn_momentum)
        kw = dict(ops=ops, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        size = static_padding_size

        def padding(kernel: int, stride: int) -> tuple[int, int]:
            nonlocal size
            if size is None:
                return kernel // 2, kernel // 2
            pad = static_same_padding(size, kernel, stride)
            size = math.ceil(size / stride)
            return pad

        stem = round_channels(32, width)
        self.stem = ConvBNAct(3, stem, 3, 2, padding=padding(3, 2), **bn, **kw)
        blocks, ends, cin = [], [], stem
        for i, (expansion, kernel, stride, channels, repeats) in enumerate(STAGES):
            cout = round_channels(channels, width)
            for r in range(math.ceil(repeats * depth)):
                s = stride if r == 0 else 1
                blocks.append(MBConv(cin, cout, expansion, kernel, s, padding=padding(kernel, s), **bn, **kw))
                cin = cout
            next_stride = STAGES[i + 1][2] if i + 1 < len(STAGES) else 2
            if i > 0 and next_stride == 2:  # the last block before the next halving
                ends.append(len(blocks) - 1)
        self.blocks = nnx.List(blocks)
        self.feature_ends = tuple(ends)
        self.head_conv = ConvBNAct(cin, round_channels(1280, width), **bn, **kw)
        self.feature_channels = (stem, *(blocks[e].project.bn.num_features for e in ends))

    def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
        """Computes the feature pyramid.

        Args:
          x: normalised images [B, H, W, 3].
          train: training mode for BatchNorm.

        Returns:
          Five maps at strides 2, 4, 8, 16, 32 (B4: 48, 32, 56, 160, 448 channels): the stem's
          and the last block's of each resolution (smp's encoder features).
        """
        x = self.stem(x, train)
        features = [x]
        for i, block in enumerate(self.blocks):
            x = block(x, train)
            if i in self.feature_ends:
                features.append(x)
        return features

    def head(self, x: jax.Array, train: bool) -> jax.Array:
        """The classifier's 1x1 convolution to 1792 channels, BatchNorm and SiLU."""
        return self.head_conv(x, train)


class EfficientNetB4(nnx.Module):
    """The EfficientNet-B4 classifier (timm `efficientnet_b4`): backbone, head convolution,
    global average pool, linear layer. 17,550,409 parameters with one output."""

    task = "classification"
    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def __init__(self, num_outputs: int = 1, *, width: float = B4_WIDTH, depth: float = B4_DEPTH, ops: Ops = STOCK,
                 rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
        """Builds the classifier.

        Args:
          num_outputs: logits per image (1: sigmoid).
          width, depth: the backbone's multipliers (B4: 1.4, 1.8).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if num_outputs < 1:
            raise ValueError(f"EfficientNetB4 num_outputs must be >= 1; got {num_outputs}")
        self.backbone = EfficientNetBackbone(width=width, depth=depth, ops=ops, rngs=rngs, dtype=dtype,
                                             param_dtype=param_dtype)
        self.fc = nnx.Linear(self.backbone.head_conv.bn.num_features, num_outputs, dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype

    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Classifies images: float RGB in [0, 1] [B, H, W, 3] -> float32 logits [B, num_outputs]."""
        x = normalize_images(images, self.input_mean, self.input_std, self.dtype)
        x = self.backbone.head(self.backbone(x, train)[-1], train)
        return self.fc(jnp.mean(x, axis=(1, 2))).astype(jnp.float32)


class EfficientNetB4UNet(EncoderUNet):
    """U-Net with an EfficientNet-B4 encoder (smp `Unet('efficientnet-b4')`): 20,225,689
    parameters, of which 806,400 are the encoder's unused head convolution."""

    input_mean = IMAGENET_MEAN
    input_std = IMAGENET_STD

    def __init__(
        self,
        *,
        decoder_channels: Sequence[int] = DECODER_CHANNELS,
        encoder_width: float = B4_WIDTH,
        encoder_depth: float = B4_DEPTH,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the model.

        Args:
          decoder_channels: decoder stage widths, coarse to fine.
          encoder_width, encoder_depth: the encoder's multipliers (B4: 1.4, 1.8).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        encoder = EfficientNetBackbone(width=encoder_width, depth=encoder_depth, static_padding_size=SMP_STATIC_SIZE,
                                       bn_epsilon=1e-3, bn_momentum=0.99, ops=ops, rngs=rngs, dtype=dtype,
                                       param_dtype=param_dtype)
        super().__init__(encoder, decoder_channels=decoder_channels, ops=ops, rngs=rngs, dtype=dtype,
                         param_dtype=param_dtype)
