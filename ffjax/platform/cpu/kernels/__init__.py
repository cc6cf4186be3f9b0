"""Native CPU kernels, XLA FFI custom calls built from their C++ source on first use.

- `conv_kernel_grad` (`conv_kernel_grad.cc`): the kernel (weight) gradient of a float32 2D
  convolution. XLA:CPU computes it as a convolution whose window is the whole image, 2-4x
  slower than PyTorch's oneDNN on a U-Net decoder's wide, few-channel layers and on
  Xception's large-image 1x1 convolutions; this kernel (register-tiled sums of A^T B over
  output rows) is 1.2-6x faster than XLA's on those layers.
- `depthwise_conv`, `depthwise_kernel_grad` (`depthwise.cc`): the stride-1 'same' depthwise
  convolution (the models use it for the input gradient) and its kernel gradient, one pass
  over the arrays each (the shifted-slice backward XLA fuses reads them several times).

- `max_pool_3x3_grad` (`max_pool.cc`): the 3x3, padding-1 max pool's input gradient in one
  pass (XLA:CPU's form writes one padded array per window tap and adds them up).

All run on XLA's intra-op thread pool (`common.h`). Measurements: docs/performance.md.

The sources are compiled with the system C++ compiler (``$CXX``, else ``c++``;
``-O3 -march=native``) against the FFI headers of the installed jaxlib into one library in a
cache (``$FFJAX_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/ffjax/kernels``, else
``~/.cache/ffjax/kernels``), keyed by the sources, flags, compiler, jaxlib and CPU, so they
build once per machine (~3 s); ``$FFJAX_KERNEL_CXXFLAGS`` adds flags (e.g. ``-march=x86-64-v3``
to build for a CPU family rather than this exact CPU). They are built when an operation set
is chosen for a CPU mesh (`ffjax.platform.select_cpu_ops`), never when a model is built.
``FFJAX_CPU_KERNELS=0`` turns them off. When the build fails (no compiler, say), a
RuntimeWarning says why and `config.cpu_ops='auto'` takes the 'xla' set: the same numbers,
slower.

Under a device mesh every call is `custom_partitioning`-wrapped: each device works on its own
shard of the batch, and kernel gradients are summed over the batch's mesh axes (an
all-reduce), so data-parallel training does not gather the activations.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import platform
import re
import shutil
import subprocess
import tempfile
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

SOURCE_DIR = pathlib.Path(__file__).parent
LIBRARY = "ffjax_cpu_kernels"
# FFI target name -> exported handler symbol.
TARGET = "ffjax_conv_kernel_grad"
DEPTHWISE = "ffjax_depthwise_conv"
DEPTHWISE_KERNEL_GRAD = "ffjax_depthwise_kernel_grad"
MAX_POOL_GRAD = "ffjax_max_pool_3x3_grad"
HANDLERS = {
    TARGET: "FfjaxConvKernelGrad",
    DEPTHWISE: "FfjaxDepthwiseConv",
    DEPTHWISE_KERNEL_GRAD: "FfjaxDepthwiseKernelGrad",
    MAX_POOL_GRAD: "FfjaxMaxPool3x3Grad",
}
ENV_SWITCH = "FFJAX_CPU_KERNELS"
ENV_CACHE = "FFJAX_KERNEL_CACHE"
ENV_FLAGS = "FFJAX_KERNEL_CXXFLAGS"  # extra compiler flags, after CXX_FLAGS (e.g. -march=x86-64-v3)
CXX_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")


class KernelBuildError(RuntimeError):
    """The C++ source did not compile or the library did not load."""


def enabled_by_env() -> bool:
    """False when ``FFJAX_CPU_KERNELS`` is 0/false/off/no."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def cache_dir() -> pathlib.Path:
    if os.environ.get(ENV_CACHE):
        return pathlib.Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "ffjax" / "kernels"


def _cpu_identity() -> str:
    """Model name and feature flags of this CPU (-march=native code is only valid on it)."""
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
        keep = [l for l in lines if l.startswith(("model name", "flags", "Features", "CPU part"))]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        raise KernelBuildError(
            f"no C++ compiler: {cxx!r} (from $CXX, default 'c++') is not on PATH. Install one "
            f"(e.g. apt install g++) or set CXX"
        )
    return path


def build(directory: str | os.PathLike | None = None) -> pathlib.Path:
    """Compiles the kernel library (once per source/compiler/jaxlib/CPU) and returns its path.

    Args:
      directory: where to keep the library; default `cache_dir()`.

    Raises:
      KernelBuildError: no compiler, or the compiler failed (its output is in the message).
    """
    cxx = _compiler()
    sources = sorted(SOURCE_DIR.glob("*.cc"))
    headers = sorted(SOURCE_DIR.glob("*.h"))
    include = jax.ffi.include_dir()
    flags = [*CXX_FLAGS, *os.environ.get(ENV_FLAGS, "").split(), f"-I{include}"]
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"{cxx} --version failed: {e}") from e
    key = hashlib.sha256()
    for part in (*(f.read_bytes() for f in sources + headers), " ".join(flags).encode(), version.encode(),
                 importlib.metadata.version("jaxlib").encode(), _cpu_identity().encode()):
        key.update(part)
        key.update(b"\0")
    out_dir = pathlib.Path(directory) if directory is not None else cache_dir()
    lib = out_dir / f"{LIBRARY}-{key.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    # Compile to a private name, then rename: concurrent processes never load a partial file.
    fd, tmp = tempfile.mkstemp(prefix=lib.stem + ".", suffix=".tmp.so", dir=out_dir)
    os.close(fd)
    cmd = [cxx, *flags, *map(str, sources), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout)[-2000:]
            raise KernelBuildError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
        os.replace(tmp, lib)
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"{' '.join(cmd)} failed: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


@functools.cache
def _register() -> bool:
    if not enabled_by_env():
        return False
    try:
        path = build()
        lib = ctypes.cdll.LoadLibrary(str(path))
        handlers = {target: getattr(lib, symbol) for target, symbol in HANDLERS.items()}
    except (KernelBuildError, OSError, AttributeError) as e:
        warnings.warn(
            f"ffjax: the native CPU kernels are unavailable ({e}). Convolution kernel gradients, "
            f"the depthwise backward and the max-pool gradient fall back to XLA's forms (same "
            f"results, slower; config.cpu_ops='native' is refused). Set "
            f"{ENV_SWITCH}=0 to skip the build and this warning.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    for target, handler in handlers.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(handler), platform="cpu")
    return True


def available() -> bool:
    """Whether the native kernels can be used: they are not switched off
    (``FFJAX_CPU_KERNELS=0``) and they built and loaded (the first call builds; cached)."""
    return _register()


def _call(x: jax.Array, g: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int],
          pad_tl: tuple[int, int]) -> jax.Array:
    out = jax.ShapeDtypeStruct((*kernel_hw, x.shape[-1], g.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call(TARGET, out)(
        x, g,
        stride_h=np.int64(strides[0]), stride_w=np.int64(strides[1]),
        pad_top=np.int64(pad_tl[0]), pad_left=np.int64(pad_tl[1]),
    )


def _batch_sharded(sharding: NamedSharding) -> NamedSharding:
    """The operand's sharding kept on the batch dimension only (the kernel needs whole images)."""
    spec = tuple(sharding.spec)
    return NamedSharding(sharding.mesh, P(spec[0] if spec else None, None, None, None))


def _per_image(call, num_arrays: int, num_static: int, sharding_rule: str,
               need_replication: tuple[str, ...], *, sum_over_batch: bool = False,
               replicated: tuple[int, ...] = ()):
    """`call(*arrays, *static)` as an operation that each device of a mesh runs on its own
    images, and that `jax.vmap` runs one example at a time.

    Operands are sharded over their batch (dimension 0) only, except the `replicated` ones
    (a kernel). With `sum_over_batch` the per-device results are summed over the batch's
    mesh axes (one all-reduce) and replicated, as a kernel gradient needs; otherwise the
    result is sharded like the first operand. `custom_partitioning` has no batching rule,
    hence `sequential_vmap`.
    """
    op = custom_partitioning(call, static_argnums=tuple(range(num_arrays, num_arrays + num_static)))

    def partition(*args):
        *static, mesh, arg_shapes, _ = args
        operand = _batch_sharded(arg_shapes[0].sharding)
        whole = NamedSharding(mesh, P())
        axes = operand.spec[0]

        def lower(*arrays):
            out = call(*arrays, *static)
            return jax.lax.psum(out, axes) if sum_over_batch and axes is not None else out

        operands = tuple(whole if i in replicated else operand for i in range(num_arrays))
        return mesh, lower, whole if sum_over_batch else operand, operands

    def infer(*args):
        *_, mesh, arg_shapes, _ = args
        return NamedSharding(mesh, P()) if sum_over_batch else _batch_sharded(arg_shapes[0].sharding)

    op.def_partition(
        partition=partition,
        infer_sharding_from_operands=infer,
        sharding_rule=sharding_rule,
        reduction_factors=("n",) if sum_over_batch else (),
        need_replication_factors=need_replication,
    )

    def run(*args):
        arrays, static = args[:num_arrays], args[num_arrays:]
        return jax.custom_batching.sequential_vmap(lambda *a: op(*a, *static))(*arrays)

    return run


# The batch (n) is reduced over; everything else must be whole on each device.
_conv_kernel_grad = _per_image(
    _call, 2, 3, "n h w c, n p q o -> kh kw c o", ("h", "w", "c", "p", "q", "o", "kh", "kw"),
    sum_over_batch=True,
)


def conv_kernel_grad(x: jax.Array, g: jax.Array, kernel_hw: Sequence[int],
                     strides: Sequence[int] = (1, 1), pad_tl: Sequence[int] = (0, 0)) -> jax.Array:
    """Kernel gradient of an NHWC x HWIO float32 convolution (dilation 1, no groups).

    Args:
      x: convolution input [N, H, W, C].
      g: gradient of the convolution output [N, Ho, Wo, O].
      kernel_hw: (KH, KW).
      strides: (stride_h, stride_w).
      pad_tl: zero padding at the top and left (bottom/right follow from Ho and Wo).

    Returns:
      dw [KH, KW, C, O], float32: sum over n, h, w of
      x[n, h*sh + ky - pt, w*sw + kx - pl, c] * g[n, h, w, o].
    """
    _check_f32(x, g)
    return _conv_kernel_grad(x, g, tuple(int(k) for k in kernel_hw), tuple(int(s) for s in strides),
                             tuple(int(p) for p in pad_tl))


def _depthwise_call(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.ffi.ffi_call(DEPTHWISE, jax.ShapeDtypeStruct(x.shape, jnp.float32))(x, kernel)


def _depthwise_kernel_grad_call(x: jax.Array, g: jax.Array, kernel_hw: tuple[int, int]) -> jax.Array:
    out = jax.ShapeDtypeStruct((*kernel_hw, x.shape[-1]), jnp.float32)
    return jax.ffi.ffi_call(DEPTHWISE_KERNEL_GRAD, out)(x, g)


def _max_pool_grad_call(x, y, g, stride):
    return jax.ffi.ffi_call(MAX_POOL_GRAD, jax.ShapeDtypeStruct(x.shape, jnp.float32))(
        x, y, g, stride=np.int64(stride)
    )


# Images are independent; each needs its whole height, width and channels.
_depthwise_conv = _per_image(
    _depthwise_call, 2, 0, "n h w c, kh kw c -> n h w c", ("h", "w", "c", "kh", "kw"), replicated=(1,)
)
_depthwise_kernel_grad = _per_image(
    _depthwise_kernel_grad_call, 2, 1, "n h w c, n h w c -> kh kw c", ("h", "w", "c", "kh", "kw"),
    sum_over_batch=True,
)
_max_pool_grad = _per_image(
    _max_pool_grad_call, 3, 1, "n h w c, n i j c, n i j c -> n h w c", ("h", "w", "c", "i", "j")
)


def depthwise_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 depthwise convolution with zero padding (KH // 2, KW // 2): 'same' for odd
    kernels, as `cpu_ops.depthwise_conv_shifted`.

    Args:
      x: [N, H, W, C] float32.
      kernel: [KH, KW, C] float32 (one filter per channel).

    Returns:
      y [N, H, W, C]: y[n, h, w, c] = sum over ky, kx of
      x[n, h + ky - KH // 2, w + kx - KW // 2, c] * kernel[ky, kx, c].
    """
    _check_f32(x, kernel)
    return _depthwise_conv(x, kernel)


def depthwise_kernel_grad(x: jax.Array, g: jax.Array, kernel_hw: Sequence[int]) -> jax.Array:
    """Kernel gradient [KH, KW, C] of `depthwise_conv` from its input x and output gradient g."""
    _check_f32(x, g)
    return _depthwise_kernel_grad(x, g, tuple(int(k) for k in kernel_hw))


def max_pool_3x3_grad(x: jax.Array, y: jax.Array, g: jax.Array, stride: int) -> jax.Array:
    """Input gradient of the 3x3 max pool with padding 1.

    Args:
      x: pool input [N, H, W, C] float32.
      y: pool output [N, Ho, Wo, C], Ho = (H - 1) // stride + 1.
      g: gradient of y.
      stride: the pool's stride.

    Returns:
      dx [N, H, W, C]: each g goes to the first tap (row-major) of its window equal to y.
    """
    _check_f32(x, y, g)
    return _max_pool_grad(x, y, g, int(stride))


def _check_f32(*arrays: jax.Array) -> None:
    if any(a.dtype != jnp.float32 for a in arrays):
        raise TypeError(f"the native CPU kernels take float32 operands; got {[str(a.dtype) for a in arrays]}")
    if not available():
        raise RuntimeError("the native CPU kernels are not available (see cpu_kernels.available)")


_SHAPE_RE = re.compile(r"f32\[([\d,]*)\]")


def flops_in_hlo(hlo_text: str) -> float:
    """FLOPs of the native convolution kernel-gradient calls in a compiled HLO module's text,
    which XLA's cost analysis does not count: 2 x N x Ho x Wo x KH x KW x C x O per call (the
    result shape [KH, KW, C, O] comes first on the line, dy [N, Ho, Wo, O] last). The
    depthwise and max-pool calls (under 1 % of a step's FLOPs) are not counted, and a call
    inside a loop (vmap) counts once."""
    total = 0.0
    for line in hlo_text.splitlines():
        if f'custom_call_target="{TARGET}"' not in line:
            continue
        shapes = [[int(d) for d in s.split(",") if d] for s in _SHAPE_RE.findall(line)]
        if len(shapes) < 3 or len(shapes[0]) != 4 or len(shapes[-1]) != 4:
            continue
        (kh, kw, c, o), (n, ho, wo, _) = shapes[0], shapes[-1]
        total += 2.0 * n * ho * wo * kh * kw * c * o
    return total
