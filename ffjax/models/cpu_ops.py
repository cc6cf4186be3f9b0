"""CPU formulations of convolutions and their backward passes (the XLA:CPU speed work).

Each computes exactly what the plain JAX operation computes, with the same parameters, in a
form XLA:CPU runs faster: its convolution library calls use one thread and its transposes of
activation-sized arrays are slow, while its matmuls use every core. `layers` picks them on
the CPU backend only (`on_cpu`); measurements in docs/performance.md, equality tests in
tests/models_test.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def on_cpu() -> bool:
    """Whether JAX runs on XLA:CPU, where the formulations below are the faster ones."""
    return jax.default_backend() == "cpu"


# FLOPs of the identity matmuls traced so far (global shapes): `ffjax.bench` reads the
# difference around a lowering and leaves them out of the model FLOP count.
TRANSPOSE_FLOPS_TRACED = 0




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
def pointwise_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x @ kernel over the channel axis (a 1x1 convolution); its kernel gradient takes g^T
    from `transpose_by_matmul`."""
    return jnp.dot(x, kernel)


def _pointwise_fwd(x, kernel):
    return jnp.dot(x, kernel), (x, kernel)


def _pointwise_bwd(residuals, g):
    x, kernel = residuals
    g2 = g.reshape(-1, g.shape[-1])
    # Kernel gradient x^T g as (g^T x)^T: XLA would transpose g (fused into its producer).
    dk = jnp.dot(transpose_by_matmul(g2), x.reshape(-1, x.shape[-1])).T
    return jnp.dot(g, kernel.T), dk.astype(kernel.dtype)


pointwise_matmul.defvjp(_pointwise_fwd, _pointwise_bwd)


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
    gt = transpose_by_matmul(jnp.pad(g, pad).reshape(rows, cout))
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
