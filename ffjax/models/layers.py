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

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
DEPTHWISE_IMPLS = ("auto", "grouped", "shifted")

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


def check_divisible(images: jax.Array, factor: int, model_name: str) -> None:
    """Raises a clear error when H or W cannot be halved `log2(factor)` times exactly."""
    h, w = images.shape[1:3]
    if h % factor or w % factor:
        raise ValueError(
            f"{model_name} needs H and W divisible by {factor} so its skip connections line "
            f"up; got {h}x{w}: resize or crop the images (e.g. 256 or 288)"
        )


def conv1x1(x: jax.Array, kernel: jax.Array, dtype, stride: int = 1) -> jax.Array:
    """A 1x1 convolution (no padding) written as a matmul over the channel axis.

    Same result and parameter layout as `nnx.Conv` with a (1, 1) kernel, but XLA:CPU runs it
    much faster: it computes a 1x1 convolution's kernel gradient as a convolution whose window
    is the whole feature map (~10 GFLOP/s on 2 cores), while the matmul form's gradient is a
    matmul (measured: Xception train step -24%, inference -29%; docs/performance.md). GPUs
    and TPUs run 1x1 convolutions as matmuls anyway.

    Args:
      x: input [B, H, W, Cin].
      kernel: [1, 1, Cin, Cout], the `nnx.Conv` kernel.
      dtype: computation dtype.
      stride: spatial stride (a strided 1x1 convolution only reads every stride-th pixel).

    Returns:
      [B, ceil(H / stride), ceil(W / stride), Cout].
    """
    if stride != 1:
        x = x[:, ::stride, ::stride, :]
    x, kernel = nnx_dtypes.promote_dtype((x, kernel), dtype=dtype)
    if _transpose_by_matmul():
        return _pointwise_matmul(x, kernel[0, 0])
    return jnp.dot(x, kernel[0, 0])


# FLOPs of the identity matmuls traced so far (global shapes): `ffjax.bench` reads the
# difference around a lowering and leaves them out of the model FLOP count.
TRANSPOSE_FLOPS_TRACED = 0


def _transpose_by_matmul() -> bool:
    return jax.default_backend() == "cpu"


def transpose_by_matmul(a: jax.Array) -> jax.Array:
    """a.T for a 2-D array, computed as eye(N) @ a.T by the matmul library (CPU).

    XLA:CPU's transposes of activation-sized arrays are slow (96 ms for a [180000, 128] f32
    array on 2 cores), and when XLA fuses one into its producer (BatchNorm's backward, for
    the kernel gradients below) the fusion writes in transposed order (150-300 ms each in the
    xception_cls train step). A matmul with the identity, contracting a's minor axis, reads a
    row by row and writes a.T with the library's blocked kernels on every core. Exact for
    finite values (each output is one product with 1 plus exact zeros); a non-finite entry
    spreads along its row of the output, and such a step is stopped by the trainer anyway.
    """
    global TRANSPOSE_FLOPS_TRACED
    TRANSPOSE_FLOPS_TRACED += 2 * a.shape[1] * a.shape[1] * a.shape[0]  # as XLA counts a dot
    eye = jnp.eye(a.shape[1], dtype=a.dtype)
    # The barrier keeps the product a materialised operand of the next matmul.
    return jax.lax.optimization_barrier(jax.lax.dot_general(eye, a, (((1,), (1,)), ((), ()))))


@jax.custom_vjp
def _pointwise_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jnp.dot(x, kernel)


def _pointwise_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _pointwise_bwd(residuals, g):
    x, kernel = residuals
    g2 = g.reshape(-1, g.shape[-1])
    # Kernel gradient x^T g as (g^T x)^T: XLA would transpose g (fused into its producer).
    dk = jnp.dot(transpose_by_matmul(g2), x.reshape(-1, x.shape[-1])).T
    return jnp.dot(g, kernel.T), dk.astype(kernel.dtype)


_pointwise_matmul.defvjp(_pointwise_fwd, _pointwise_bwd)


# Stride-1 3x3 convolutions at least this wide (both channel counts) and this large (H * W)
# take their kernel gradient from `conv3x3_kernel_grad` on CPU. Below, XLA's own kernel
# gradient was as fast or faster (16x16x256->256: 14.0 vs 15.7 ms; docs/performance.md).
MATMUL_GRAD_MIN_CHANNELS = 32
MATMUL_GRAD_MIN_PIXELS = 32 * 32


def _conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv3x3_kernel_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """Kernel gradient of a stride-1, pad-1 3x3 convolution as nine matmuls.

    XLA:CPU computes this gradient as a convolution at ~35-40 GFLOP/s on one thread. In the
    flattened zero-padded layout [B * (H + 2) * (W + 2), C], a tap offset (di, dj) is a row
    offset di * (W + 2) + dj, so each tap's input is one contiguous row window of the same
    array and its gradient is one matmul of g^T (transposed once, shared by the nine taps)
    with that window; g's zero border cancels the rows that wrap around an image edge.
    Measured 1.2-2.3x faster per layer from 32 channels and 32x32 pixels up.

    Args:
      x: convolution input [B, H, W, Cin].
      g: gradient of the convolution output [B, H, W, Cout].

    Returns:
      The kernel gradient [3, 3, Cin, Cout] (HWIO), in the dtype of x and g.
    """
    b, h, w, cin = x.shape
    cout = g.shape[-1]
    wp = w + 2
    rows = b * (h + 2) * wp
    reach = wp + 1  # the largest row offset of a tap
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    xf = jnp.pad(jnp.pad(x, pad).reshape(rows, cin), ((reach, reach), (0, 0)))
    gf = jnp.pad(g, pad).reshape(rows, cout)
    if _transpose_by_matmul():
        gt = transpose_by_matmul(gf)
    else:
        # A barrier at least makes the transpose one plain copy: fused into g's producers
        # (BatchNorm's backward) it wrote in transposed order and was slower.
        gt = jax.lax.optimization_barrier(gf.T)
    taps = []
    for i in range(3):
        for j in range(3):
            start = reach + (i - 1) * wp + (j - 1)
            taps.append(jnp.dot(gt, jax.lax.slice_in_dim(xf, start, start + rows, axis=0)))
    return jnp.stack(taps).reshape(3, 3, cout, cin).transpose(0, 1, 3, 2)


@jax.custom_vjp
def conv3x3_matmul_grad(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1, pad-1 3x3 convolution (NHWC, HWIO) whose kernel gradient runs as matmuls.

    The forward pass and the input gradient are XLA's own convolutions; only the kernel
    gradient is `conv3x3_kernel_grad`.
    """
    return _conv3x3(x, kernel)


def _conv3x3_fwd(x, kernel):
    return _conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(residuals, g):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda v: _conv3x3(v, kernel), x)
    return input_vjp(g)[0], conv3x3_kernel_grad(x, g).astype(kernel.dtype)


conv3x3_matmul_grad.defvjp(_conv3x3_fwd, _conv3x3_bwd)


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
        relu: bool = True,
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
          padding: symmetric zero padding; default kernel_size // 2, which keeps an even input
            side H at exactly H / stride (PyTorch's convention, unlike 'SAME' at stride 2).
          relu: apply ReLU after BatchNorm.
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        pad = kernel_size // 2 if padding is None else padding
        self.conv = nnx.Conv(
            in_features,
            out_features,
            (kernel_size, kernel_size),
            strides=stride,
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.bn = batch_norm(out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.relu = relu
        # Unpadded 1x1 convolutions (the Xception and ResNet shortcuts) run as matmuls.
        self.as_matmul = kernel_size == 1 and pad == 0
        # Same parameters and forward pass; only the backward differs (CPU only: GPUs and
        # TPUs have fast convolution kernel gradients).
        self.matmul_grad = (
            kernel_size == 3
            and stride == 1
            and pad == 1
            and min(in_features, out_features) >= MATMUL_GRAD_MIN_CHANNELS
            and jax.default_backend() == "cpu"
        )
        self.stride = stride
        self.dtype = dtype

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.as_matmul:
            x = conv1x1(x, self.conv.kernel[...], self.dtype, self.stride)
        elif self.matmul_grad and x.shape[1] * x.shape[2] >= MATMUL_GRAD_MIN_PIXELS:
            x, kernel = nnx_dtypes.promote_dtype((x, self.conv.kernel[...]), dtype=self.dtype)
            x = conv3x3_matmul_grad(x, kernel)
        else:
            x = self.conv(x)
        x = self.bn(x, use_running_average=not train)
        return nnx.relu(x) if self.relu else x


def resolve_depthwise_impl(impl: str) -> str:
    """Maps 'auto' to the fast depthwise formulation for the default JAX backend.

    Args:
      impl: 'auto', 'grouped' or 'shifted'.

    Returns:
      'shifted' on CPU (XLA:CPU's grouped convolution is ~10x slower there, above all in the
      backward pass), 'grouped' on GPU/TPU, or `impl` itself when it is not 'auto'.
    """
    if impl not in DEPTHWISE_IMPLS:
        raise ValueError(f"depthwise_impl must be one of {DEPTHWISE_IMPLS}; got {impl!r}")
    if impl == "auto":
        return "shifted" if jax.default_backend() == "cpu" else "grouped"
    return impl


def _depthwise_shifted(x: jax.Array, kernel: jax.Array) -> jax.Array:
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = None
    for i in range(kh):
        for j in range(kw):
            term = xp[:, i : i + h, j : j + w, :] * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


# Rows summed elementwise before the kernel gradient's reduction (see depthwise_kernel_grad).
DEPTHWISE_GRAD_ROWS = 8


def depthwise_kernel_grad(x: jax.Array, g: jax.Array, kh: int, kw: int) -> jax.Array:
    """Kernel gradient of `depthwise_conv_shifted`, reading x and g about once.

    Autodiff computes one full reduction of g times a shifted x per tap (nine passes over
    both for 3x3). Here each tap's product is first summed over groups of
    DEPTHWISE_GRAD_ROWS rows with plain additions (one loop fusion for all taps, writing
    9/8 of g's size, channel-concatenated) and that is reduced once. Measured 1.5-1.9x faster
    than autodiff's (8x150x150x128: 88 vs 133 ms; 8x19x19x728: 6.7 vs 12.5 ms). Summing over
    rows rather than over the batch keeps it local to each device of a batch-sharded mesh.

    Args:
      x: convolution input [B, H, W, C].
      g: gradient of the convolution output [B, H, W, C].
      kh, kw: odd kernel sides.

    Returns:
      The kernel gradient [kh, kw, 1, C].
    """
    b, h, w, c = x.shape
    r = DEPTHWISE_GRAD_ROWS
    hr = -(-h // r) * r  # rows padded with zeros (zero gradient) to a multiple of r
    xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2 + hr - h), (kw // 2, kw // 2), (0, 0)))
    gp = jnp.pad(g, ((0, 0), (0, hr - h), (0, 0), (0, 0))).reshape(b, hr // r, r, w, c)
    partial = []
    for i in range(kh):
        for j in range(kw):
            xs = xp[:, i : i + hr, j : j + w, :].reshape(b, hr // r, r, w, c)
            acc = gp[:, :, 0] * xs[:, :, 0]
            for q in range(1, r):
                acc = acc + gp[:, :, q] * xs[:, :, q]
            partial.append(acc)
    return jnp.sum(jnp.concatenate(partial, axis=-1), axis=(0, 1, 2)).reshape(kh, kw, 1, c)


@jax.custom_vjp
def depthwise_conv_shifted(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 'same' depthwise convolution as a sum of shifted slices times channel weights.

    Backward: the input gradient is the same shifted sum of g with the kernel flipped; the
    kernel gradient is `depthwise_kernel_grad`.

    Args:
      x: input [B, H, W, C].
      kernel: depthwise kernel [kh, kw, 1, C] (the layout of `nnx.Conv` with
        feature_group_count=C), kh and kw odd.

    Returns:
      [B, H, W, C], equal to the grouped convolution with symmetric padding (k - 1) / 2.
    """
    return _depthwise_shifted(x, kernel)


def _depthwise_fwd(x, kernel):
    return _depthwise_shifted(x, kernel), (x, kernel)


def _depthwise_bwd(residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    dx = _depthwise_shifted(g, kernel[::-1, ::-1])
    return dx, depthwise_kernel_grad(x, g, kh, kw).astype(kernel.dtype)


depthwise_conv_shifted.defvjp(_depthwise_fwd, _depthwise_bwd)


class SeparableConv(nnx.Module):
    """Depthwise kxk (no bias) then pointwise 1x1 (no bias, run as a matmul), stride 1, 'same' size.

    Both depthwise formulations read the same `depthwise.kernel` parameter, so a checkpoint
    written with one loads into the other.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        *,
        depthwise_impl: str = "auto",
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
    ):
        """Builds the layer.

        Args:
          in_features: input channels (one depthwise filter each).
          out_features: output channels of the pointwise convolution.
          kernel_size: odd depthwise kernel side.
          depthwise_impl: 'auto', 'grouped' (feature_group_count conv) or 'shifted'.
          rngs: parameter RNG streams.
          dtype: computation dtype.
          param_dtype: parameter dtype.
        """
        if kernel_size % 2 != 1:
            raise ValueError(f"SeparableConv needs an odd kernel_size; got {kernel_size}")
        pad = kernel_size // 2
        self.depthwise = nnx.Conv(
            in_features,
            in_features,
            (kernel_size, kernel_size),
            padding=((pad, pad), (pad, pad)),
            feature_group_count=in_features,
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.pointwise = nnx.Conv(
            in_features,
            out_features,
            (1, 1),
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.depthwise_impl = resolve_depthwise_impl(depthwise_impl)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.depthwise_impl == "grouped":
            x = self.depthwise(x)
        else:
            x, kernel = nnx_dtypes.promote_dtype((x, self.depthwise.kernel[...]), dtype=self.dtype)
            x = depthwise_conv_shifted(x, kernel)
        return conv1x1(x, self.pointwise.kernel[...], self.dtype)
