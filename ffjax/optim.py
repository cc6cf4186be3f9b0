"""Optimizers and learning-rate schedules from the config."""

from __future__ import annotations

from typing import Any

import optax

OPTIMIZERS = ("adamw", "sgd", "lamb", "lars")


def scaled_learning_rate(config: Any) -> float:
    """The linear scaling rule: lr × (effective batch / base batch)."""
    effective = config.batch_size * config.grad_accum_steps
    return config.learning_rate * effective / config.base_batch_size


def learning_rate_schedule(config: Any) -> optax.Schedule:
    """Linear warmup to the scaled peak, then cosine decay to 0 (or constant)."""
    peak = scaled_learning_rate(config)
    # Schedules count optimizer updates, which accumulation makes rarer than steps.
    updates = max(1, config.num_train_steps // config.grad_accum_steps)
    warmup = min(config.warmup_steps // config.grad_accum_steps, updates - 1)
    if config.schedule not in ("cosine", "constant"):
        raise ValueError(f"config.schedule={config.schedule!r}: expected 'cosine' or 'constant'.")
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, max(updates - warmup, 1))
    else:
        decay = optax.constant_schedule(peak)
    if warmup <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(config: Any) -> optax.GradientTransformation:
    """The optimizer named by `config.optimizer`, with clipping and gradient accumulation.

    Build it once per run: NNX and jit compare optax transformations by identity, so a
    rebuilt one recompiles the step.
    """
    lr = learning_rate_schedule(config)
    name = config.optimizer
    if name == "adamw":
        tx = optax.adamw(lr, weight_decay=config.weight_decay)
    elif name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(config.weight_decay), optax.sgd(lr, momentum=config.momentum, nesterov=True))
    elif name == "lamb":
        tx = optax.lamb(lr, weight_decay=config.weight_decay)
    elif name == "lars":
        tx = optax.lars(lr, weight_decay=config.weight_decay, momentum=config.momentum)
    else:
        raise ValueError(f"config.optimizer={name!r} is not one of {OPTIMIZERS}.")
    if config.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    if config.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps).gradient_transformation()
    return tx
