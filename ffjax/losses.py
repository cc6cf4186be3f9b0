"""Losses for the two tasks the paper compares: pixel segmentation and frame classification."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def segmentation_loss(logits: jax.Array, mask: jax.Array, *, pos_weight: float, dice_weight: float) -> tuple[jax.Array, dict]:
    """Per-pixel BCE (fake pixels weighted by `pos_weight`) plus `dice_weight` × soft Dice.

    Args:
      logits: [B, H, W, 1] per-pixel logits.
      mask: [B, H, W] 0/1 ground truth.
      pos_weight: weight of the fake class in the BCE: fake pixels are a small fraction.
      dice_weight: weight of the soft Dice loss of the fake class (0 disables it). Dice is
        computed over the whole global batch, so frames of real videos (empty masks) do not
        each contribute an undefined ratio.

    Returns:
      (loss, parts) where parts holds the unweighted terms for logging.
    """
    logits = logits[..., 0].astype(jnp.float32)
    target = mask.astype(jnp.float32)
    # log-sigmoid form of weighted BCE: stable for large |logits|.
    bce = -(pos_weight * target * jax.nn.log_sigmoid(logits) + (1.0 - target) * jax.nn.log_sigmoid(-logits))
    bce = bce.mean()
    prob = jax.nn.sigmoid(logits)
    inter = jnp.sum(prob * target)
    dice = 1.0 - (2.0 * inter + 1.0) / (jnp.sum(prob) + jnp.sum(target) + 1.0)
    loss = bce + dice_weight * dice
    return loss, {"bce": bce, "dice": dice}


def classification_loss(logits: jax.Array, label: jax.Array) -> tuple[jax.Array, dict]:
    """Frame-level BCE for one output, softmax cross-entropy for two or more.

    Args:
      logits: [B, K] classifier outputs.
      label: [B] int, 1 = fake.
    """
    logits = logits.astype(jnp.float32)
    if logits.shape[-1] == 1:
        bce = optax.sigmoid_binary_cross_entropy(logits[:, 0], label.astype(jnp.float32)).mean()
    else:
        bce = optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()
    return bce, {"bce": bce}


def task_loss(task: str, logits: jax.Array, batch: dict, loss_cfg: Any) -> tuple[jax.Array, dict]:
    """Dispatches on the model's task ('segmentation' or 'classification')."""
    if task == "segmentation":
        return segmentation_loss(logits, batch["mask"], pos_weight=loss_cfg.pos_weight, dice_weight=loss_cfg.dice_weight)
    if task == "classification":
        return classification_loss(logits, batch["label"])
    raise ValueError(f"Unknown task {task!r}: expected 'segmentation' or 'classification'.")
