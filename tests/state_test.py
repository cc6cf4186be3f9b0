"""Tests for ffjax.state: the operation set chosen from config and mesh, forward-mode AD with
the stock set, and restoring a model without its optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ffjax import checkpoints, evaluation, inference, models, optim, sharding, state
from tests.helpers import config_on, load_config


def _config(**fields):
    config = load_config("xception_cls")
    with config.unlocked():
        config.model_kwargs.width = 1 / 16
        config.model_kwargs.middle_blocks = 1
        for key, value in fields.items():
            setattr(config, key, value)
    return config


def test_model_ops_follow_config_cpu_ops():
    mesh = sharding.make_mesh(2)
    assert state.model_ops(_config(cpu_ops="stock"), mesh) is models.STOCK
    assert state.model_ops(_config(cpu_ops="xla"), mesh).name == "xla"
    assert state.model_ops(_config(cpu_ops="auto"), mesh).name in ("native", "xla")
    with pytest.raises(ValueError, match="config.cpu_ops='fast'"):
        state.model_ops(_config(cpu_ops="fast"), mesh)
    # A checkpoint's config from before cpu_ops existed: 'auto'.
    config = _config()
    with config.unlocked():
        del config["cpu_ops"]
    assert state.model_ops(config, mesh).name in ("native", "xla")


def test_jvp_through_the_xception_classifier_with_stock_ops():
    """`config.cpu_ops='stock'`: only flax/lax operations, so forward-mode AD works on CPU;
    the CPU formulations' custom VJPs do not allow it."""
    mesh = sharding.make_mesh(1)
    images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    tangent = jax.random.normal(jax.random.key(1), images.shape)

    def forward(config):
        model = state.build_model(config, state.model_ops(config, mesh))
        return lambda x: model(x, train=False)

    # Jitted: op by op, the two passes took ~50 s.
    out, dout = jax.jit(lambda x, t: jax.jvp(forward(_config(cpu_ops="stock")), (x,), (t,)))(images, tangent)
    assert out.shape == dout.shape == (2, 1) and bool(jnp.all(jnp.isfinite(dout)))
    # Forward mode agrees with reverse mode through the CPU formulations (same parameters):
    # d out_i = <grad out_i, tangent>.
    xla = forward(_config(cpu_ops="xla"))

    @jax.jit
    def reverse(x, t):
        y, vjp = jax.vjp(xla, x)
        return y, jnp.stack([jnp.sum(vjp(jnp.zeros_like(y).at[i, 0].set(1.0))[0] * t) for i in range(2)])

    out_xla, rows = reverse(images, tangent)
    np.testing.assert_allclose(out, out_xla, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dout[:, 0], rows, rtol=1e-3, atol=1e-4 * float(jnp.max(jnp.abs(dout))))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(forward(_config(cpu_ops="xla")), (images,), (tangent,))


def test_building_a_model_compiles_nothing(monkeypatch):
    """The platform choice is made before the model: building one (even abstractly) never
    builds the native kernels."""
    from ffjax.platform.cpu import kernels

    monkeypatch.setattr(kernels, "build", lambda *a, **k: pytest.fail("a model build compiled the kernels"))
    monkeypatch.setattr(kernels, "available", lambda: pytest.fail("a model build asked for the kernels"))
    config = _config(cpu_ops="xla")
    abstract = jax.eval_shape(lambda: state.build_model(config, state.ops_named("xla")))
    assert abstract is not None


def test_eval_and_predict_restore_without_an_optimizer(tiny_dataset, tmp_path, monkeypatch):
    config = config_on(tiny_dataset)
    mesh = sharding.make_mesh()
    _, saved = state.create_train_state(config, mesh, optim.make_optimizer(config))
    ckpt = checkpoints.Checkpointer(str(tmp_path))
    ckpt.save(3, saved, {"config": config.to_dict(), "step": 3, "model": config.model})
    ckpt.wait()
    ckpt.close()

    requested = []
    real_restore = ocp.CheckpointManager.restore

    def spy(self, step, *args, **kwargs):
        composite = kwargs.get("args", args[0] if args else None)
        if composite is not None and checkpoints._STATE in composite:
            requested.append(composite[checkpoints._STATE])
        return real_restore(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", spy)
    monkeypatch.setattr(optim, "make_optimizer", lambda *a, **k: pytest.fail("an optimizer was built"))

    loaded = inference.load_model(tmp_path)
    result = evaluation.evaluate_checkpoint(config, str(tmp_path), split="test")
    assert result.protocol["checkpoint_step"] == 3
    assert len(requested) == 2
    for args in requested:  # the parameters and statistics, nothing else, were asked for
        assert isinstance(args, ocp.args.PyTreeRestore) and args.partial_restore
        assert set(args.item) == set(state.MODEL_KEYS)
    for got, want in zip(jax.tree.leaves(loaded.state), jax.tree.leaves((saved.params, saved.rest))):
        np.testing.assert_array_equal(got, want)
