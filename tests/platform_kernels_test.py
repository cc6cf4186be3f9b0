"""Tests for ffjax.platform.cpu.kernels (native convolution kernel gradient, depthwise
backward, max-pool gradient) and the 'native' operation set of ffjax.platform.cpu.ops: equal
to the 'xla' set, bit-reproducible, local per device under a mesh, built once, and a clear
fallback when they cannot be built or are switched off."""

import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from ffjax import sharding
from ffjax.models import create_model
from ffjax.platform import selection
from ffjax.platform.cpu import kernels as cpu_kernels
from ffjax.platform.cpu import ops as cpu_ops
from ffjax.state import ops_named

NHWC = ("NHWC", "HWIO", "NHWC")

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU kernels")


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    monkeypatch.delenv(cpu_kernels.ENV_SWITCH, raising=False)
    cpu_kernels._register.cache_clear()
    assert cpu_kernels.available(), "the native kernel did not build on this machine"
    yield
    cpu_kernels._register.cache_clear()


def _xla_kernel_grad(x, g, kernel_hw, strides, pads):
    k = jnp.zeros((*kernel_hw, x.shape[-1], g.shape[-1]), jnp.float32)
    conv = lambda k: jax.lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=NHWC)
    return jax.vjp(conv, k)[1](g)[0]


def _out_size(size, k, s, lo, hi):
    return (size + lo + hi - k) // s + 1


# (batch, H, W, C, O, kernel, stride, ((top, bottom), (left, right)))
SHAPES = [
    (2, 12, 12, 16, 16, (3, 3), (1, 1), ((1, 1), (1, 1))),  # 'same', one vector wide
    (2, 9, 11, 3, 40, (3, 3), (1, 1), ((1, 1), (1, 1))),    # C < O, O not a multiple of 16
    (2, 10, 10, 40, 5, (3, 3), (1, 1), ((0, 0), (0, 0))),   # C > O (transposed partials), valid
    (1, 16, 15, 3, 24, (7, 7), (2, 2), ((3, 3), (3, 3))),   # ResNet stem: 7x7 stride 2
    (3, 13, 13, 8, 70, (3, 3), (2, 2), ((1, 1), (1, 1))),   # odd side, stride 2, 4+ vectors of O
    (2, 14, 14, 33, 20, (1, 1), (2, 2), ((0, 0), (0, 0))),  # 1x1 stride-2 shortcut
    (2, 8, 8, 5, 7, (3, 3), (1, 1), ((2, 0), (0, 2))),      # asymmetric padding, tiny channels
    (2, 5, 40, 6, 17, (3, 1), (1, 3), ((1, 1), (0, 0))),    # non-square kernel and strides
    (2, 4, 200, 12, 48, (3, 3), (1, 1), ((1, 1), (1, 1))),  # rows wider than one work item
]


@pytest.mark.parametrize("n,h,w,c,o,kernel_hw,strides,pads", SHAPES)
def test_kernel_grad_equals_xla(n, h, w, c, o, kernel_hw, strides, pads):
    ho = _out_size(h, kernel_hw[0], strides[0], *pads[0])
    wo = _out_size(w, kernel_hw[1], strides[1], *pads[1])
    kx, kg = jax.random.split(jax.random.key(h * w + c))
    x = jax.random.normal(kx, (n, h, w, c))
    g = jax.random.normal(kg, (n, ho, wo, o))
    native = jax.jit(
        lambda x, g: cpu_kernels.conv_kernel_grad(x, g, kernel_hw, strides, (pads[0][0], pads[1][0]))
    )(x, g)
    expected = _xla_kernel_grad(x, g, kernel_hw, strides, pads)
    assert native.shape == (*kernel_hw, c, o)
    np.testing.assert_allclose(native, expected, rtol=1e-5, atol=1e-4 * float(jnp.max(jnp.abs(expected))))


def _loss(conv_fn, strides, pads):
    def loss(x, k):
        y = conv_fn(x, k, strides, pads, dimension_numbers=NHWC)
        return jnp.sum(jnp.sin(y))

    return loss


@pytest.mark.parametrize("strides,pads", [((1, 1), "SAME"), ((2, 2), ((1, 1), (1, 1))), ((1, 1), "VALID")])
def test_conv_gradients_equal_xla_and_use_the_kernel(strides, pads):
    x = jax.random.normal(jax.random.key(0), (2, 17, 17, 8))
    k = jax.random.normal(jax.random.key(1), (3, 3, 8, 16)) * 0.2
    grad = jax.jit(jax.grad(_loss(cpu_ops.conv_general_dilated_native, strides, pads), argnums=(0, 1)))
    expected = jax.grad(_loss(jax.lax.conv_general_dilated, strides, pads), argnums=(0, 1))(x, k)
    assert cpu_kernels.TARGET in grad.lower(x, k).as_text()
    for got, want in zip(grad(x, k), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "x_shape,k_shape,kwargs",
    [
        ((2, 8, 8, 4), (3, 3, 4, 4), {"rhs_dilation": (2, 2)}),
        ((2, 8, 8, 4), (3, 3, 1, 4), {"feature_group_count": 4}),
        ((1, 4, 4, 1024), (3, 3, 1024, 64), {}),  # 9 x 1024 x 64 weights: over the limit
        ((4, 8, 8, 4), (3, 3, 4, 4), {"batch_group_count": 2}),
    ],
)
def test_ineligible_convolutions_stay_with_xla(x_shape, k_shape, kwargs):
    x, k = jnp.ones(x_shape), jnp.ones(k_shape)
    assert cpu_ops.native_kernel_grad_padding(x, k, (1, 1), "SAME", dimension_numbers=NHWC, **kwargs) is None
    loss = lambda x, k: jnp.sum(cpu_ops.conv_general_dilated_native(x, k, (1, 1), "SAME", dimension_numbers=NHWC, **kwargs))
    assert cpu_kernels.TARGET not in jax.jit(jax.grad(loss, argnums=1)).lower(x, k).as_text()
    bf16 = x.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
    assert cpu_ops.native_kernel_grad_padding(*bf16, (1, 1), "SAME", dimension_numbers=NHWC) is None


def test_mesh_reduces_each_shard_locally_then_sums():
    """Under a batch-sharded mesh each device runs the kernel on its own images and the
    partial gradients are all-reduced: no all-gather of the activations."""
    mesh = sharding.make_mesh(8)
    x = jax.random.normal(jax.random.key(0), (8, 12, 12, 16))
    g = jax.random.normal(jax.random.key(1), (8, 12, 12, 16))
    data = NamedSharding(mesh, P(sharding.DATA_AXIS))
    fn = jax.jit(
        lambda x, g: cpu_kernels.conv_kernel_grad(x, g, (3, 3), (1, 1), (1, 1)),
        in_shardings=(data, data), out_shardings=sharding.replicated(mesh),
    )
    hlo = fn.lower(x, g).compile().as_text()
    assert "all-gather" not in hlo
    assert "all-reduce" in hlo
    (call,) = [line for line in hlo.splitlines() if cpu_kernels.TARGET in line]
    assert "f32[1,12,12,16]" in call  # each device's own image
    expected = _xla_kernel_grad(x, g, (3, 3), (1, 1), ((1, 1), (1, 1)))
    np.testing.assert_allclose(fn(x, g), expected, rtol=1e-5, atol=1e-3)


def test_kernel_gradients_are_bit_reproducible():
    """Many work items over XLA's threads: the sums' order must not depend on timing."""
    x = jax.random.normal(jax.random.key(0), (8, 48, 48, 16))
    g = jax.random.normal(jax.random.key(1), (8, 48, 48, 32))
    conv = jax.jit(lambda x, g: cpu_kernels.conv_kernel_grad(x, g, (3, 3), (1, 1), (1, 1)))
    depthwise = jax.jit(lambda x: cpu_kernels.depthwise_kernel_grad(x, x, (3, 3)))
    first_conv, first_dw = np.asarray(conv(x, g)), np.asarray(depthwise(x))
    for _ in range(5):
        np.testing.assert_array_equal(conv(x, g), first_conv)
        np.testing.assert_array_equal(depthwise(x), first_dw)


def test_even_depthwise_kernels_are_refused():
    x, k = jnp.ones((1, 6, 6, 4)), jnp.ones((2, 2, 1, 4))
    for fn in (cpu_ops.depthwise_conv_native, cpu_ops.depthwise_conv_shifted):
        with pytest.raises(ValueError, match="odd kernel"):
            fn(x, k)


def test_max_pool_gradient_under_a_mesh_stays_per_image():
    mesh = sharding.make_mesh(8)
    data = NamedSharding(mesh, P(sharding.DATA_AXIS))
    x = jax.random.normal(jax.random.key(0), (8, 9, 9, 20))
    fn = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(cpu_ops.max_pool_3x3_native(x, 2)))), in_shardings=data, out_shardings=data)
    hlo = fn.lower(x).compile().as_text()
    assert "all-gather" not in hlo
    (call,) = [line for line in hlo.splitlines() if f'custom_call_target="{cpu_kernels.MAX_POOL_GRAD}"' in line]
    assert "f32[1,9,9,20]" in call
    want = jax.grad(lambda x: jnp.sum(jnp.sin(nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))))))(x)
    np.testing.assert_allclose(fn(x), want, rtol=1e-6, atol=1e-6)


def test_model_gradients_equal_with_and_without_the_kernel():
    """A whole tiny U-Net (ResNet-34 encoder): parameter gradients through every layer agree
    whether the model is built with the 'native' set or the 'xla' set."""
    images = jax.random.uniform(jax.random.key(2), (2, 64, 64, 3))

    def grad_fn(ops):
        graphdef, state = nnx.split(create_model("unet_resnet34", ops=ops, rngs=nnx.Rngs(0)))

        def loss(state):
            return jnp.mean(jax.nn.softplus(nnx.merge(graphdef, state)(images, train=False)))

        return jax.jit(jax.grad(loss)), state

    native, state = grad_fn(ops_named("native"))
    xla, _ = grad_fn(ops_named("xla"))
    assert cpu_kernels.TARGET in native.lower(state).as_text()
    assert cpu_kernels.TARGET not in xla.lower(state).as_text()
    want = xla(state)
    got = native(state)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        scale = float(jnp.max(jnp.abs(b))) + 1e-12
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale)


def test_flops_in_hlo_counts_each_call():
    x, g = jnp.ones((2, 32, 32, 16)), jnp.ones((2, 16, 16, 24))
    hlo = jax.jit(lambda x, g: cpu_kernels.conv_kernel_grad(x, g, (3, 3), (2, 2), (1, 1))).lower(x, g).compile().as_text()
    assert cpu_kernels.flops_in_hlo(hlo) == 2 * 2 * 16 * 16 * 9 * 16 * 24
    assert cpu_kernels.flops_in_hlo("ROOT %add = f32[2] add(%a, %b)") == 0


def test_switched_off_by_env(monkeypatch):
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    cpu_kernels._register.cache_clear()
    assert not cpu_kernels.available()
    assert selection.select_cpu_ops("auto", jax.devices()) == "xla"
    with pytest.raises(ValueError, match="native.*FFJAX_CPU_KERNELS"):
        selection.select_cpu_ops("native", jax.devices())
    x = jnp.ones((2, 32, 32, 8))
    with pytest.raises(RuntimeError, match="not available"):
        cpu_kernels.conv_kernel_grad(x, jnp.ones((2, 32, 32, 8)), (3, 3), (1, 1), (1, 1))


def test_no_compiler_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "no-such-compiler-ffjax")
    monkeypatch.setenv(cpu_kernels.ENV_CACHE, str(tmp_path))  # nothing cached there
    cpu_kernels._register.cache_clear()
    with pytest.warns(RuntimeWarning, match="no-such-compiler-ffjax.*FFJAX_CPU_KERNELS=0"):
        assert not cpu_kernels.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cpu_kernels.available()  # cached: no second warning
    assert selection.select_cpu_ops("auto", jax.devices()) == "xla"
    x, k = jnp.ones((2, 32, 32, 8)), jnp.ones((3, 3, 8, 8))
    conv = ops_named(selection.select_cpu_ops("auto", jax.devices())).conv_general_dilated
    loss = lambda x, k: jnp.sum(conv(x, k, (1, 1), "SAME", dimension_numbers=NHWC))
    assert cpu_kernels.TARGET not in jax.jit(jax.grad(loss, argnums=1)).lower(x, k).as_text()


def test_compile_error_names_the_command(monkeypatch, tmp_path):
    bad = tmp_path / "bad.cc"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE_DIR", tmp_path)
    with pytest.raises(cpu_kernels.KernelBuildError, match="bad.cc.*exited with"):
        cpu_kernels.build(tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.so"))  # no half-written library left behind


def test_build_is_cached_per_source(tmp_path):
    first = cpu_kernels.build(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert cpu_kernels.build(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert first.name.startswith("ffjax_cpu_kernels-") and os.access(first, os.R_OK)
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporaries left


@pytest.mark.parametrize("shape,k", [((2, 9, 11, 40), 3), ((1, 6, 5, 16), 5), ((3, 2, 2, 7), 3), ((2, 12, 12, 128), 3)])
def test_depthwise_native_equals_shifted_with_gradients(shape, k):
    x = jax.random.normal(jax.random.key(0), shape)
    kernel = jax.random.normal(jax.random.key(1), (k, k, 1, shape[-1]))
    g = jax.random.normal(jax.random.key(2), shape)
    y, vjp = jax.vjp(jax.jit(cpu_ops.depthwise_conv_native), x, kernel)
    y_ref, vjp_ref = jax.vjp(cpu_ops.depthwise_conv_shifted, x, kernel)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(vjp(g), vjp_ref(g)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_depthwise_under_a_mesh_stays_per_image():
    mesh = sharding.make_mesh(8)
    data = NamedSharding(mesh, P(sharding.DATA_AXIS))
    x = jax.random.normal(jax.random.key(0), (8, 10, 10, 24))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 24))

    def loss(x, kernel):
        return jnp.sum(jnp.sin(cpu_ops.depthwise_conv_native(x, kernel)))

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), in_shardings=(data, sharding.replicated(mesh)))
    hlo = fn.lower(x, kernel).compile().as_text()
    assert "all-gather" not in hlo
    calls = [line for line in hlo.splitlines() if "custom_call_target=\"ffjax_depthwise" in line]
    assert len(calls) == 2 and all("f32[1,10,10,24]" in line for line in calls)  # dx, dk
    want = jax.value_and_grad(
        lambda x, k: jnp.sum(jnp.sin(cpu_ops.depthwise_conv_shifted(x, k))), argnums=(0, 1)
    )(x, kernel)
    for got, ref in zip(jax.tree.leaves(fn(x, kernel)), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_xception_native_and_shifted_depthwise_agree_with_gradients():
    native = create_model("xception", width=1 / 16, middle_blocks=1, ops=ops_named("native"), rngs=nnx.Rngs(0))
    shifted = create_model("xception", width=1 / 16, middle_blocks=1, ops=ops_named("xla"), rngs=nnx.Rngs(1))
    nnx.update(shifted, nnx.state(native))
    images = jax.random.uniform(jax.random.key(3), (2, 64, 64, 3))
    forward = nnx.jit(lambda m, x: m(x, train=False))
    np.testing.assert_allclose(forward(native, images), forward(shifted, images), rtol=1e-4, atol=1e-5)

    def loss(model):
        return jnp.mean(jax.nn.softplus(model(images, train=False)))

    got = nnx.jit(nnx.grad(loss))(native)
    want = nnx.jit(nnx.grad(loss))(shifted)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * (float(jnp.max(jnp.abs(b))) + 1e-12))


class _FakeDevice:
    platform = "gpu"


def test_the_native_set_is_for_cpu_meshes_only():
    assert selection.select_cpu_ops("auto", jax.devices()) == "native"
    assert selection.select_cpu_ops("auto", [_FakeDevice()]) == "stock"
    assert selection.select_cpu_ops("xla", [_FakeDevice()]) == "xla"
    with pytest.raises(ValueError, match="CPU devices only"):
        selection.select_cpu_ops("native", [_FakeDevice()])
    with pytest.raises(ValueError, match="config.cpu_ops='fast'"):
        selection.select_cpu_ops("fast", jax.devices())


_PORTABLE_CHECK = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from ffjax.platform.cpu import kernels as cpu_kernels
    from ffjax.platform.cpu import ops as cpu_ops
    assert cpu_kernels.available()
    nhwc = ("NHWC", "HWIO", "NHWC")
    for (n, h, w, c, o, s, p) in [(2, 9, 11, 3, 40, 1, 1), (2, 10, 10, 40, 5, 2, 1), (1, 6, 6, 16, 16, 1, 0)]:
        x = jax.random.normal(jax.random.key(h), (n, h, w, c))
        ho, wo = (h + 2 * p - 3) // s + 1, (w + 2 * p - 3) // s + 1
        g = jax.random.normal(jax.random.key(c), (n, ho, wo, o))
        k0 = jnp.zeros((3, 3, c, o))
        want = jax.vjp(lambda k: jax.lax.conv_general_dilated(x, k, (s, s), ((p, p), (p, p)), dimension_numbers=nhwc), k0)[1](g)[0]
        got = cpu_kernels.conv_kernel_grad(x, g, (3, 3), (s, s), (p, p))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * float(jnp.max(jnp.abs(want))))
    x = jax.random.normal(jax.random.key(0), (2, 7, 9, 21))
    k = jax.random.normal(jax.random.key(1), (3, 3, 1, 21))
    g = jax.random.normal(jax.random.key(2), x.shape)
    for a, b in zip(jax.vjp(cpu_ops.depthwise_conv_native, x, k)[1](g), jax.vjp(cpu_ops.depthwise_conv_shifted, x, k)[1](g)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    from flax import nnx
    x = jnp.round(2 * jax.random.normal(jax.random.key(3), (2, 9, 10, 21))) / 2  # ties
    y, vjp = jax.vjp(lambda x: cpu_ops.max_pool_3x3_native(x, 2), x)
    ref = jax.vjp(lambda x: nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))), x)[1]
    g = jax.random.normal(jax.random.key(4), y.shape)
    np.testing.assert_allclose(vjp(g)[0], ref(g)[0], rtol=1e-6, atol=1e-6)
    print("ok")
""")


def test_kernels_built_for_older_cpus_compute_the_same(tmp_path):
    """The kernels' AVX2 (x86-64-v3, 8-float vectors) and SSE2 (x86-64, 4) code paths, for
    CPUs without AVX-512 (which -march=native picks elsewhere): each built for its target in a
    fresh process (the two side by side: each build is one compiler process), equal to XLA."""
    if os.uname().machine not in ("x86_64", "AMD64"):
        pytest.skip("x86 targets")
    procs = {}
    for march in ("x86-64-v3", "x86-64"):
        cache = tmp_path / march
        env = dict(os.environ, **{cpu_kernels.ENV_FLAGS: f"-march={march}", cpu_kernels.ENV_CACHE: str(cache)})
        env.pop("XLA_FLAGS", None)
        procs[march] = (cache, subprocess.Popen([sys.executable, "-c", _PORTABLE_CHECK], env=env, text=True,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for march, (cache, proc) in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{march}: {err[-3000:]}"
        assert out.strip().endswith("ok"), march
        assert len(list(cache.glob("ffjax_cpu_kernels-*.so"))) == 1, march


def test_vmap_runs_the_kernels_per_example():
    """Per-example gradients (vmap over a batch of batches): custom_partitioning has no
    batching rule, so each kernel runs once per example; equal to XLA's forms."""
    x = jax.random.normal(jax.random.key(0), (3, 2, 12, 12, 8))
    k = jax.random.normal(jax.random.key(1), (3, 3, 8, 16)) * 0.2
    dk = jax.random.normal(jax.random.key(2), (3, 3, 1, 16))

    def loss(ops, k, dk, x):
        y = ops.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)
        return jnp.sum(jnp.sin(ops.max_pool_3x3(ops.depthwise(y, dk), 2)))

    native = lambda k, dk, x: loss(ops_named("native"), k, dk, x)
    grads = jax.jit(jax.vmap(jax.grad(native, argnums=(0, 1)), in_axes=(None, None, 0)))
    assert cpu_kernels.TARGET in grads.lower(k, dk, x).as_text()
    xla = lambda k, dk, x: loss(ops_named("xla"), k, dk, x)
    want = jax.vmap(jax.grad(xla, argnums=(0, 1)), in_axes=(None, None, 0))(k, dk, x)
    for got, ref in zip(grads(k, dk, x), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
