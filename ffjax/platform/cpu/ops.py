"""CPU formulations of convolutions and max pooling (the XLA:CPU speed work).

Each computes exactly what the plain JAX operation computes, with the same parameters, in a
form XLA:CPU runs faster: the depthwise convolution 4-30x faster than the grouped
convolution (`feature_group_count`), the 3x3 max pool's gradient without XLA:CPU's
index-array select-and-scatter, and, with the native kernels of `ffjax.platform.cpu.kernels`,
dense convolutions' kernel gradients, the depthwise backward and the max-pool gradient by
those kernels. Measurements in docs/performance.md, equality tests in tests/models_test.py
and tests/cpu_kernels_test.py.

`OPS` lists the two CPU operation sets by name ('xla': the formulations alone, 'native': with
the native kernels); `ffjax.platform.select_cpu_ops` picks one from the mesh's devices and
`config.cpu_ops`, and the models receive it as `ffjax.models.Ops`. Nothing here runs at
import or when a model is built.

Second-order differentiation (grad of grad) is not supported through the native kernels (a
custom call has no derivative rule), nor forward-mode differentiation (`jax.jvp`) through the
custom VJPs of either set: use `config.cpu_ops='stock'` for those.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ffjax.platform.cpu import kernels


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


def _check_odd(kernel: jax.Array) -> None:
    kh, kw = kernel.shape[:2]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"the shifted/native depthwise forms need odd kernel sides; got {kh}x{kw}")


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
    _check_odd(kernel)
    return _depthwise(x, kernel, False)


def depthwise_conv_native(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`depthwise_conv_shifted` (stride 1, 'same', odd kernel) with the native CPU kernels of
    `ffjax.platform.cpu.kernels` in the backward pass: the input gradient (the depthwise convolution of
    g with the kernel flipped) and the kernel gradient, each one pass over the arrays. The
    forward pass stays the shifted-slice sum, which XLA fuses with the BatchNorm/ReLU before
    it (a custom call would be a fusion barrier there: eval steps 10-25 % slower, measured).
    The kernels take float32; other dtypes get `depthwise_conv_shifted`.

    Args:
      x: input [B, H, W, C].
      kernel: depthwise kernel [kh, kw, 1, C], kh and kw odd.
    """
    _check_odd(kernel)
    return _depthwise(x, kernel, x.dtype == jnp.float32 and kernel.dtype == jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise(x: jax.Array, kernel: jax.Array, native: bool) -> jax.Array:
    """The shifted-slice forward of both forms; `native` picks the backward."""
    del native
    return _depthwise_shifted(x, kernel)


def _depthwise_fwd(x, kernel, native):
    del native
    return _depthwise_shifted(x, kernel), (x, kernel)


def _depthwise_bwd(native, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    if native:
        dx = kernels.depthwise_conv(g, kernel[::-1, ::-1, 0, :])
        return dx, kernels.depthwise_kernel_grad(x, g, (kh, kw))[:, :, None, :]
    dx = _depthwise_shifted(g, kernel[::-1, ::-1])
    return dx, depthwise_kernel_grad(x, g, kh, kw).astype(kernel.dtype)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def _pool_taps(x: jax.Array, stride: int) -> list[jax.Array]:
    """The nine strided windows of a 3x3, pad-1 max pool (padding is -inf), row-major order."""
    b, h, w, c = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    return [
        jax.lax.slice(xp, (0, i, j, 0), (b, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c), (1, stride, stride, 1))
        for i in range(3)
        for j in range(3)
    ]


def max_pool_3x3_xla(x: jax.Array, stride: int) -> jax.Array:
    """3x3 max pool, padding 1, as `nnx.max_pool(x, (3, 3), (s, s), ((1, 1), (1, 1)))`.

    XLA:CPU lowers the max pool's gradient (select-and-scatter) to index arrays and a
    scatter. Here the gradient goes to the first tap (row-major) holding the window's
    maximum, as select-and-scatter does on ties, each tap's share put back in place by an
    interior-padded copy (xception_cls train -4 %).
    """
    return _max_pool(x, stride, False)


def max_pool_3x3_native(x: jax.Array, stride: int) -> jax.Array:
    """`max_pool_3x3_xla` whose gradient is one pass of the native kernel
    (`kernels.max_pool_3x3_grad`) for float32; other dtypes get the XLA form."""
    return _max_pool(x, stride, x.dtype == jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x: jax.Array, stride: int, native: bool) -> jax.Array:
    del native
    return functools.reduce(jnp.maximum, _pool_taps(x, stride))


def _max_pool_fwd(x, stride, native):
    y = _max_pool(x, stride, native)
    return y, (x, y)


def _max_pool_bwd(stride, native, residuals, g):
    x, y = residuals
    if native and g.dtype == jnp.float32:
        return (kernels.max_pool_3x3_grad(x, y, g, stride),)
    h, w = x.shape[1:3]
    ho, wo = y.shape[1:3]
    zero = jnp.zeros((), g.dtype)
    taken = jnp.zeros(y.shape, bool)
    dx = jnp.zeros((x.shape[0], h + 2, w + 2, x.shape[3]), g.dtype)
    for t, tap in enumerate(_pool_taps(x, stride)):
        i, j = divmod(t, 3)
        hit = (tap == y) & ~taken  # only the first tap holding the maximum
        taken = taken | hit
        # Back to padded coordinates (i + stride * p, j + stride * q).
        config = (
            (0, 0, 0),
            (i, h + 2 - i - (ho - 1) * stride - 1, stride - 1),
            (j, w + 2 - j - (wo - 1) * stride - 1, stride - 1),
            (0, 0, 0),
        )
        dx = dx + jax.lax.pad(jnp.where(hit, g, zero), zero, config)
    return (dx[:, 1 : h + 1, 1 : w + 1, :],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


# Convolutions with at most this many weights (KH * KW * C * O) take their kernel gradient
# from the native kernel (ffjax.platform.cpu.kernels), which keeps one float32 partial sum of the
# weights per thread. Measured per layer at batch 8 (docs/performance.md): up to 2 MiB of
# partial sums it is 1.2-6x faster than XLA's; beyond (16x16x256->256 3x3 and wider, the
# Xception middle flow's 728->728) XLA's is level or faster.
NATIVE_KERNEL_GRAD_MAX_WEIGHTS = 1 << 19
_NHWC_HWIO = ("NHWC", "HWIO", "NHWC")


def native_kernel_grad_padding(
    lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None,
    rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
    batch_group_count: int = 1, **kwargs,
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The explicit padding of a `lax.conv_general_dilated` call when its kernel gradient
    should come from the native kernel, else None.

    It should when the call is a float32 NHWC x HWIO 2D convolution without dilation, feature
    or batch groups, output sharding, another result type or other options, with non-negative
    padding, and it has at most NATIVE_KERNEL_GRAD_MAX_WEIGHTS weights. (Whether the kernels
    are built is decided once, when the operation set is chosen: `select_cpu_ops`.)
    """
    if lhs.ndim != 4 or rhs.ndim != 4 or feature_group_count != 1:
        return None
    if lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32:
        return None
    if kwargs.get("out_sharding") is not None or kwargs.get("preferred_element_type") not in (None, jnp.float32):
        return None
    if batch_group_count != 1 or set(kwargs) - {"out_sharding", "preferred_element_type"}:
        return None
    if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
        return None
    canonical = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC_HWIO)
    if jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != canonical:
        return None
    strides = tuple(window_strides)
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    else:
        pads = padding
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    if any(p < 0 for pair in pads for p in pair):
        return None
    if rhs.size > NATIVE_KERNEL_GRAD_MAX_WEIGHTS:
        return None
    return pads


def _conv(x, kernel, strides, padding, precision):
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=_NHWC_HWIO, precision=precision
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_native_kernel_grad(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                            padding: tuple[tuple[int, int], tuple[int, int]], precision=None) -> jax.Array:
    """NHWC x HWIO convolution; backward: XLA's input gradient, the native kernel gradient.

    The forward pass and the input gradient are XLA's own; only the kernel gradient comes
    from `kernels.conv_kernel_grad` (1.2-6x faster on the layers it is used for;
    the same sums in another order: equal to float32 rounding, tests/cpu_kernels_test.py).
    """
    return _conv(x, kernel, strides, padding, precision)


def _conv_fwd(x, kernel, strides, padding, precision):
    return _conv(x, kernel, strides, padding, precision), (x, kernel)


def _conv_bwd(strides, padding, precision, residuals, g):
    x, kernel = residuals
    (dx,) = jax.linear_transpose(lambda x_: _conv(x_, kernel, strides, padding, precision), x)(g)
    dk = kernels.conv_kernel_grad(
        x, g, kernel.shape[:2], strides, (padding[0][0], padding[1][0])
    )
    return dx, dk


conv_native_kernel_grad.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated_native(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, **kwargs):
    """`jax.lax.conv_general_dilated` (same signature), taking the kernel gradient from the
    native CPU kernel where `native_kernel_grad_padding` says so (what the models' `nnx.Conv`
    layers call in the 'native' set)."""
    pads = native_kernel_grad_padding(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, **kwargs,
    )
    if pads is None:
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
            batch_group_count=batch_group_count, precision=precision, **kwargs,
        )
    return conv_native_kernel_grad(lhs, rhs, tuple(int(s) for s in window_strides), pads, precision)


# The CPU operation sets, by `config.cpu_ops` name: the fields of `ffjax.models.Ops`.
OPS = {
    "xla": dict(
        conv_general_dilated=jax.lax.conv_general_dilated,
        depthwise=depthwise_conv_shifted,
        max_pool_3x3=max_pool_3x3_xla,
    ),
    "native": dict(
        conv_general_dilated=conv_general_dilated_native,
        depthwise=depthwise_conv_native,
        max_pool_3x3=max_pool_3x3_native,
    ),
}
