"""Building blocks shared by the models: input normalisation, conv-BN-ReLU, separable conv.

BatchNorm follows PyTorch's defaults (momentum 0.1 there is 0.9 here, epsilon 1e-5) because
every reference architecture in this package (timm/Cadene Xception, torchvision ResNet-34,
segmentation_models_pytorch U-Net) was trained with them.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes as nnx_dtypes

from ffjax.models.ops import STOCK, Ops

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# The two input conventions of the reference models.
HALF_MEAN = (0.5, 0.5, 0.5)  # FF++ Xception / pretrainedmodels Xception
HALF_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ResNet
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(
    images: jax.Array, mean: Sequence[float], std: Sequence[float], dtype
) -> jax.Array:
    """Checks the model input contract and normalises per channel.

    Args:
      images: float RGB images in [0, 1], shape [B, H, W, 3].
      mean: per-channel mean subtracted (length 3).
      std: per-channel standard deviation divided by (length 3).
      dtype: computation dtype of the result.

    Returns:
      (images - mean) / std as `dtype`, shape [B, H, W, 3].
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"models take RGB images shaped [B, H, W, 3]; got shape {tuple(images.shape)}"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"models take float images in [0, 1]; got dtype {images.dtype}: convert uint8 "
            "pixels with images.astype(jnp.float32) / 255 first"
        )
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def batch_norm(num_features: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm with the PyTorch defaults shared by every reference model.

    Args:
      num_features: channels normalised (last axis).
      dtype: computation dtype.
      param_dtype: dtype of scale and bias.
      rngs: parameter RNG streams.

    Returns:
      An `nnx.BatchNorm`; call it with `use_running_average=not train`.
    """
    return nnx.BatchNorm(
        num_features,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling of [B, H, W, C] to [B, 2H, 2W, C]."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


def upsample_bilinear_aligned(x: jax.Array, factor: int) -> jax.Array:
    """Bilinear upsampling of [B, H, W, C] by an integer factor with corners aligned (PyTorch's
    `interpolate(..., mode='bilinear', align_corners=True)`, which smp's FPN uses): output
    pixel i samples input position i * (n - 1) / (m - 1). One small interpolation matrix per
    axis, applied as two matrix products (MXU/tensor-core friendly)."""

    def weights(n: int) -> jax.Array:
        m = n * factor
        src = jnp.arange(m, dtype=jnp.float32) * ((n - 1) / max(m - 1, 1))
        return jnp.maximum(0.0, 1.0 - jnp.abs(src[:, None] - jnp.arange(n, dtype=jnp.float32)[None, :])).astype(x.dtype)

    x = jnp.einsum("ih,bhwc->biwc", weights(x.shape[1]), x)
    return jnp.einsum("jw,biwc->bijc", weights(x.shape[2]), x)


def pad_to_multiple(x: jax.Array, factor: int) -> jax.Array:
    """Repeats the last row and column of [B, H, W, C] until H and W divide by `factor`.

    The encoder-decoder models halve their input five times (four for DeepLabV3+) and line
    the skips up again; FF++'s Xception crops are 299 px. They pad so, run, and crop their
    logits back to H x W (smp refuses such sizes instead)."""
    pad_h, pad_w = -x.shape[1] % factor, -x.shape[2] % factor
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return x


def check_divisible(images: jax.Array, factor: int, model_name: str) -> None:
    """Raises a clear error when H or W cannot be halved `log2(factor)` times exactly."""
    h, w = images.shape[1:3]
    if h % factor or w % factor:
        raise ValueError(
            f"{model_name} needs H and W divisible by {factor} so its skip connections line "
            f"up; got {h}x{w}: resize or crop the images (e.g. 256 or 288)"
        )


def conv(in_features: int, out_features: int, kernel_size, *, ops: Ops = STOCK, **kwargs) -> nnx.Conv:
    """`nnx.Conv` computed by `ops.conv_general_dilated` (same parameters in every set)."""
    return nnx.Conv(
        in_features, out_features, kernel_size,
        conv_general_dilated=ops.conv_general_dilated, **kwargs,
    )


class ConvBNReLU(nnx.Module):
    """Convolution without bias, BatchNorm, optional ReLU (PyTorch-style symmetric padding)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        padding: int | None = None,
        dilation: int = 1,
        relu: bool = True,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the layer.

        Args:
          in_features: input channels.
          out_features: output channels.
          kernel_size: square kernel side.
          stride: spatial stride.
          padding: symmetric zero padding; default dilation * (kernel_size // 2), which keeps an
            even input side H at exactly H / stride (PyTorch's convention, unlike 'SAME' at
            stride 2).
          dilation: kernel dilation (atrous convolution).
          relu: apply ReLU after BatchNorm.
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        pad = dilation * (kernel_size // 2) if padding is None else padding
        self.conv = conv(
            in_features,
            out_features,
            (kernel_size, kernel_size),
            strides=stride,
            padding=((pad, pad), (pad, pad)),
            kernel_dilation=dilation,
            use_bias=False,
            ops=ops,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.bn = batch_norm(out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.relu = relu

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = self.conv(x)
        x = self.bn(x, use_running_average=not train)
        return nnx.relu(x) if self.relu else x


class SeparableConv(nnx.Module):
    """Depthwise kxk (no bias) then pointwise 1x1 (no bias), stride 1, 'same' size.

    The depthwise step is `ops.depthwise` when the set has one (undilated only), else
    `nnx.Conv`'s grouped convolution; both read the same `depthwise.kernel` parameter, so a
    checkpoint written with one loads into the other.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        *,
        dilation: int = 1,
        ops: Ops = STOCK,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the layer.

        Args:
          in_features: input channels (one depthwise filter each).
          out_features: output channels of the pointwise convolution.
          kernel_size: odd depthwise kernel side.
          dilation: depthwise kernel dilation (atrous; DeepLab's ASPP).
          ops: the operation set (`ffjax.models.Ops`).
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if kernel_size % 2 != 1:
            raise ValueError(f"SeparableConv needs an odd kernel_size; got {kernel_size}")
        pad = dilation * (kernel_size // 2)
        self.depthwise = conv(
            in_features,
            in_features,
            (kernel_size, kernel_size),
            padding=((pad, pad), (pad, pad)),
            kernel_dilation=dilation,
            feature_group_count=in_features,
            use_bias=False,
            ops=ops,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.pointwise = conv(
            in_features,
            out_features,
            (1, 1),
            use_bias=False,
            ops=ops,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.depthwise_fn = ops.depthwise if dilation == 1 else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.depthwise_fn is None:
            x = self.depthwise(x)
        else:
            x, kernel = nnx_dtypes.promote_dtype((x, self.depthwise.kernel[...]), dtype=self.dtype)
            x = self.depthwise_fn(x, kernel)
        return self.pointwise(x)
