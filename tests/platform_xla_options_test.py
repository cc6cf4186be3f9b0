"""Tests for ffjax.platform.cpu.xla_options (via ffjax.platform.selection): when the XLA:CPU
compile options apply, and that they take effect."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ffjax import configs, optim, sharding, train
from ffjax.bench.steps import synthetic_batch
from ffjax.platform import selection
from ffjax.platform.cpu import xla_options
from ffjax.state import create_train_state


@pytest.fixture(autouse=True)
def fresh_cache():
    xla_options.compiler_options.cache_clear()
    yield
    xla_options.compiler_options.cache_clear()


def _library_convolutions(hlo: str) -> int:
    """Convolutions inside XLA:CPU's YNNPACK library fusions in an optimised HLO text."""
    bodies, name = {}, None
    for line in hlo.splitlines():
        if line.endswith("{") and line.startswith("%"):
            name = line.split()[0][1:]
            bodies[name] = []
        elif name is not None:
            bodies[name].append(line)
    called = [line.split("calls=%")[1].split(",")[0] for line in hlo.splitlines() if '"__ynn_fusion"' in line]
    return sum(" convolution(" in line for c in called for line in bodies.get(c, []))


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_cpu_gets_the_options(monkeypatch):
    monkeypatch.delenv(xla_options.SWITCH, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert xla_options.compiler_options() == xla_options.CPU_OPTIONS


@pytest.mark.parametrize(
    "env",
    [
        {xla_options.SWITCH: "0"},
        {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    ],
)
def test_switched_off_or_set_by_the_user(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert xla_options.compiler_options() is None


class _FakeDevice:
    def __init__(self, platform):
        self.platform = platform


def test_options_follow_the_mesh_devices_not_the_default_backend(monkeypatch):
    monkeypatch.delenv(xla_options.SWITCH, raising=False)
    assert selection.compiler_options(jax.devices()) == xla_options.CPU_OPTIONS
    assert selection.compiler_options([_FakeDevice("gpu"), _FakeDevice("gpu")]) is None
    with pytest.raises(ValueError, match="one platform"):
        selection.compiler_options([_FakeDevice("gpu"), _FakeDevice("cpu")])


def test_a_rejected_option_warns_and_falls_back(monkeypatch):
    monkeypatch.delenv(xla_options.SWITCH, raising=False)
    monkeypatch.setattr(xla_options, "CPU_OPTIONS", {xla_options.YNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_NO_SUCH_TYPE"})
    with pytest.warns(RuntimeWarning, match="rejects the XLA:CPU compile options"):
        assert xla_options.compiler_options() is None


def test_convolutions_leave_the_library_calls_with_the_same_numbers(monkeypatch):
    # The options must reach XLA: the convolution is no longer inside a YNNPACK fusion, and
    # its forward and backward give the same numbers as XLA's defaults.
    monkeypatch.delenv(xla_options.SWITCH, raising=False)
    # (XLA:CPU's defaults put convolutions this size, not smaller ones, in YNNPACK calls.)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 32))
    k = jax.random.normal(jax.random.key(1), (3, 3, 32, 32))

    def loss(x, k):
        return jnp.sum(_conv(x, k) ** 2)

    fn = jax.value_and_grad(loss, argnums=(0, 1))
    tuned = jax.jit(fn, compiler_options=xla_options.compiler_options()).lower(x, k).compile()
    default = jax.jit(fn).lower(x, k).compile()
    convs = [line for line in tuned.as_text().splitlines() if " convolution(" in line]
    assert len(convs) == 3  # forward, input and kernel gradient
    assert _library_convolutions(tuned.as_text()) == 0
    for a, b in zip(jax.tree.leaves(tuned(x, k)), jax.tree.leaves(default(x, k))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_the_train_step_is_compiled_with_them(monkeypatch):
    # A rejected option makes the compile fail: proof that compile_train_step passes them.
    bogus = {xla_options.YNN_FUSION_TYPE: "LIBRARY_FUSION_TYPE_NO_SUCH_TYPE"}
    monkeypatch.setattr(xla_options, "compiler_options", lambda: bogus)
    config = configs.load("test")
    mesh = sharding.make_mesh(1)
    tx = optim.make_optimizer(config)
    graphdef, state = create_train_state(config, mesh, tx)
    step = train.compile_train_step(config, mesh, graphdef, tx)
    batch = sharding.global_batch(synthetic_batch(2, 32), mesh)
    with pytest.raises(Exception, match="NO_SUCH_TYPE"):
        step.lower(state, batch).compile()
