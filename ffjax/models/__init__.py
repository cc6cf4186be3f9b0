"""Models for frame-level face forgery segmentation and classification.

Every model is an `nnx.Module` called as `model(images, train=...)` on float RGB images in
[0, 1] shaped [B, H, W, 3]; it normalises them with its own `input_mean` / `input_std` first.
Segmentation models (`task == 'segmentation'`) return logits [B, H, W, 1], classifiers
(`task == 'classification'`) logits [B, num_outputs]. `frame_score` turns either into one
fake probability per image.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ffjax.models.encoder_unet import ResNet34UNet, XceptionUNet
from ffjax.models.unet import UNet
from ffjax.models.xception import Xception

MODELS: dict[str, type[nnx.Module]] = {
    "xception": Xception,
    "unet": UNet,
    "unet_xception": XceptionUNet,
    "unet_resnet34": ResNet34UNet,
}

TASKS = ("segmentation", "classification")

# A frame's score is the mean probability of its most suspicious 1% of pixels: the mean over
# all pixels would let a small manipulated region (NeuralTextures changes little more than
# the mouth, a few % of a face crop) drown in the untouched background, while the single
# highest pixel would let one noisy pixel decide.
DEFAULT_TOPK_FRACTION = 0.01


def create_model(
    name: str,
    *,
    rngs: nnx.Rngs,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    **kwargs,
) -> nnx.Module:
    """Builds a model by its config name.

    Args:
      name: a key of `MODELS`.
      rngs: parameter RNG streams, e.g. `nnx.Rngs(0)`.
      dtype: computation dtype (e.g. jnp.bfloat16); every layer receives it.
      param_dtype: parameter dtype (keep float32 for bf16 mixed precision).
      **kwargs: the model class's own options (e.g. `depth`, `base_width` for 'unet',
        `num_outputs`, `width`, `depthwise_impl` for 'xception').

    Returns:
      The initialised model.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: valid names are {sorted(MODELS)}")
    return MODELS[name](rngs=rngs, dtype=dtype, param_dtype=param_dtype, **kwargs)


def frame_score(
    logits: jax.Array, task: str, topk_fraction: float = DEFAULT_TOPK_FRACTION
) -> jax.Array:
    """Reduces model logits to one fake probability per image; jit-compatible.

    Args:
      logits: segmentation logits [B, H, W, 1] or classifier logits [B, 1] / [B, 2].
      task: 'segmentation' or 'classification' (the model's `task`).
      topk_fraction: segmentation only: the score is the mean of the highest
        ceil(topk_fraction * H * W) pixel probabilities (at least one pixel); 1.0 gives the
        plain mean. A Python number, static under jit.

    Returns:
      float32 [B] in [0, 1]: for segmentation the top-k mean above; for classifiers
      sigmoid of the single logit, or softmax's 'fake' (index 1) probability for two logits.
    """
    if task == "segmentation":
        if logits.ndim != 4 or logits.shape[-1] != 1:
            raise ValueError(
                f"segmentation logits must be [B, H, W, 1]; got shape {tuple(logits.shape)}"
            )
        try:
            fraction = float(topk_fraction)
        except (TypeError, jax.errors.ConcretizationTypeError) as e:
            raise TypeError(
                "topk_fraction must be a Python number (it fixes k, a static shape under jit); "
                f"got {type(topk_fraction).__name__}"
            ) from e
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"topk_fraction must be in (0, 1]; got {topk_fraction}")
        flat = logits.reshape(logits.shape[0], -1).astype(jnp.float32)
        k = min(flat.shape[1], max(1, math.ceil(fraction * flat.shape[1])))
        # Sigmoid is monotonic, so the top-k logits are the top-k probabilities.
        top = flat if k == flat.shape[1] else jax.lax.top_k(flat, k)[0]
        return jnp.mean(jax.nn.sigmoid(top), axis=1)
    if task == "classification":
        if logits.ndim != 2 or logits.shape[1] not in (1, 2):
            raise ValueError(
                "classifier logits must be [B, 1] (sigmoid) or [B, 2] (softmax, index 1 = fake) "
                f"to give a fake probability; got shape {tuple(logits.shape)}"
            )
        logits = logits.astype(jnp.float32)
        if logits.shape[1] == 1:
            return jax.nn.sigmoid(logits[:, 0])
        return jax.nn.softmax(logits, axis=-1)[:, 1]
    raise ValueError(f"task must be one of {TASKS}; got {task!r}")


def flops_per_image(name: str, size: int, **kwargs) -> float:
    """FLOPs of one inference forward pass on a size x size image, from XLA's cost analysis.

    The model is built abstractly (no parameter memory) and the forward at batch 1 is
    compiled for the default backend, which takes seconds to a minute on CPU.

    Args:
      name: a key of `MODELS`.
      size: image side in pixels (299 for Xception, 256 for the U-Nets by convention).
      **kwargs: passed to `create_model` (e.g. dtype, depthwise_impl, depth).

    Returns:
      The compiled forward's 'flops' count (multiply-adds count as two).
    """
    model = nnx.eval_shape(lambda: create_model(name, rngs=nnx.Rngs(0), **kwargs))
    graphdef, state = nnx.split(model)

    def forward(state, images):
        return nnx.merge(graphdef, state)(images, train=False)

    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    cost = jax.jit(forward).lower(state, images).compile().cost_analysis()
    # Older JAX returned one dict per device program.
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])


__all__ = [
    "DEFAULT_TOPK_FRACTION",
    "MODELS",
    "ResNet34UNet",
    "UNet",
    "Xception",
    "XceptionUNet",
    "create_model",
    "flops_per_image",
    "frame_score",
]
