"""Trainer tests that need no dataset: sharding equivalence, config checks, loss guards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ffjax import optim, sharding, train
from ffjax.data import augment
from ffjax.state import create_train_state
from tests.helpers import load_config


def synthetic_batch(batch: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, size, size), np.uint8)
    mask[: batch // 2, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    return {
        "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "mask": mask,
        "label": (np.arange(batch) < batch // 2).astype(np.int32),
        "method_id": np.zeros(batch, np.int32),
        "compression_id": np.ones(batch, np.int32),
        "position": augment.positions(0, batch),
    }


def one_step(config, num_devices: int, batch: dict):
    mesh = sharding.make_mesh(num_devices)
    tx = optim.make_optimizer(config)
    graphdef, state = create_train_state(config, mesh, tx)
    step = train.compile_train_step(config, mesh, graphdef, tx)
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    return jax.device_get(state), jax.device_get(metrics)


def test_one_step_on_8_devices_equals_1_device():
    """Same global batch: same update, BatchNorm statistics included (global-batch BN)."""
    config = load_config()
    with config.unlocked():
        config.warmup_steps = 0  # a warmup starts at lr 0: the first step would not move
    batch = synthetic_batch(8, 32)
    state8, metrics8 = one_step(config, 8, batch)
    state1, metrics1 = one_step(config, 1, batch)
    np.testing.assert_allclose(metrics8["loss"], metrics1["loss"], rtol=1e-5)
    for name, tree8, tree1 in (("params", state8.params, state1.params), ("batch stats", state8.rest, state1.rest)):
        leaves8, leaves1 = jax.tree.leaves(tree8), jax.tree.leaves(tree1)
        assert len(leaves8) == len(leaves1) > 0
        for a, b in zip(leaves8, leaves1):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=name)
    # The step really moved the parameters and the running statistics.
    init_mesh = sharding.make_mesh(1)
    _, init = create_train_state(config, init_mesh, optim.make_optimizer(config))
    init = jax.device_get(init)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init.params), jax.tree.leaves(state1.params)))
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(init.rest), jax.tree.leaves(state1.rest)))
    assert int(state8.step) == int(state1.step) == 1


def test_non_finite_loss_leaves_state_unchanged_and_stops_naming_the_step():
    config = load_config()
    with config.unlocked():
        config.learning_rate = 1e-3
    batch = synthetic_batch(8, 32)
    batch["image"] = batch["image"].astype(np.float32)
    batch["image"][0, 0, 0, 0] = np.nan  # a corrupt input poisons the forward pass
    mesh = sharding.make_mesh(8)
    tx = optim.make_optimizer(config)
    graphdef, state = create_train_state(config, mesh, tx)
    before = jax.device_get(state.params)
    step = train.compile_train_step(config, mesh, graphdef, tx)
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.params))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FloatingPointError, match="step 7"):
        train._check_finite(7, metrics)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch_size", 12, "config.batch_size=12 must be a positive multiple of the device count"),
        ("eval_batch_size", 4, "config.eval_batch_size=4"),
        ("model", "resnet9000", "config.model='resnet9000' is not one of"),
        ("optimizer", "adagrad", "config.optimizer='adagrad'"),
        ("dtype", "float8", "config.dtype/param_dtype='float8'"),
        ("dtype", "float16", "config.dtype='float16' is not supported for training .no loss scaling.: use --config.dtype=bfloat16"),
        ("param_dtype", "float16", "use --config.param_dtype=bfloat16"),
    ],
)
def test_bad_config_fails_before_any_compile(field, value, message, tmp_path):
    config = load_config()
    with config.unlocked():
        setattr(config, field, value)
        config.dataset.data_dir = str(tmp_path)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        train.validate_config(config, sharding.make_mesh())


def test_missing_dataset_names_the_folder_and_the_build_command(tmp_path):
    config = load_config()
    with config.unlocked():
        config.dataset.data_dir = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere.*ffjax build-data"):
        train.validate_config(config, sharding.make_mesh())


def test_learning_rate_scaling_and_schedule():
    config = load_config()
    with config.unlocked():
        config.batch_size, config.base_batch_size, config.grad_accum_steps = 64, 32, 2
        config.learning_rate, config.warmup_steps, config.num_train_steps = 1e-3, 20, 200
    assert optim.scaled_learning_rate(config) == pytest.approx(4e-3)
    schedule = optim.learning_rate_schedule(config)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(4e-3)  # warmup counts updates: 20 steps / 2
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)


def test_gradient_accumulation_updates_every_k_steps_in_bf16():
    """bf16 compute, fp32 parameters, and optax.MultiSteps applying every 2nd step."""
    config = load_config()
    with config.unlocked():
        config.grad_accum_steps, config.warmup_steps, config.dtype = 2, 0, "bfloat16"
    mesh = sharding.make_mesh(8)
    tx = optim.make_optimizer(config)
    graphdef, state = create_train_state(config, mesh, tx)
    step = train.compile_train_step(config, mesh, graphdef, tx)
    snapshots = [jax.device_get(state.params)]
    for seed in range(2):
        state, metrics = step(state, sharding.global_batch(synthetic_batch(8, 32, seed), mesh))
        assert np.isfinite(float(metrics["loss"]))
        snapshots.append(jax.device_get(state.params))
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(snapshots[-1]))
    unchanged = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    assert unchanged(snapshots[0], snapshots[1])      # first micro-step: only accumulated
    assert not unchanged(snapshots[1], snapshots[2])  # second: the averaged update lands


@pytest.mark.parametrize("name, kwargs", [
    ("deeplabv3plus_resnet34", dict(encoder_width=1 / 16, stage_blocks=(1, 1, 1, 1), decoder_channels=8, atrous_rates=(1, 2, 3))),
])
def test_new_models_train_through_the_step_on_8_devices_as_on_1(name, kwargs):
    """DeepLabV3+ (dilated and dilated-separable convolutions, aligned bilinear upsampling, a
    pooled ASPP branch) goes through the trainer's step with the platform's operations and
    gives the same update on 8 devices as on 1. The other issue-18 models train through the
    same step on the 8-device mesh in study_test, and take an SGD step in models_test."""
    import ml_collections

    config = load_config()
    with config.unlocked():
        config.model = name
        config.model_kwargs = ml_collections.ConfigDict(kwargs)
        config.warmup_steps = 0
    batch = synthetic_batch(8, 64)
    state8, metrics8 = one_step(config, 8, batch)
    state1, metrics1 = one_step(config, 1, batch)
    np.testing.assert_allclose(metrics8["loss"], metrics1["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state8.params), jax.tree.leaves(state1.params)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
