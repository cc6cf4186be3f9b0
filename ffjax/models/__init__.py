"""Models for frame-level face forgery segmentation and classification.

Every model is an `nnx.Module` called as `model(images, train=...)` on float RGB images in
[0, 1] shaped [B, H, W, 3]; it normalises them with its own `input_mean` / `input_std` first.
Each names its task (`task = 'segmentation'`: logits [B, H, W, 1]; `'classification'`:
logits [B, num_outputs]; `'segmentation_classification'`: both, as `{'mask', 'frame'}`); `ffjax.tasks` owns what follows from it (loss, frame score,
metrics). Every model takes `ops` (`Ops`): the operation set, picked by the caller.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ffjax.models.deeplab import DeepLabV3PlusResNet34
from ffjax.models.efficientnet import EfficientNetB4, EfficientNetB4UNet
from ffjax.models.encoder_unet import ResNet34UNet, XceptionUNet, XceptionUNetTwoHead
from ffjax.models.fpn import FPNResNet34
from ffjax.models.ops import STOCK, Ops
from ffjax.models.resnet import ResNet34
from ffjax.models.unet import UNet
from ffjax.models.xception import Xception

MODELS: dict[str, type[nnx.Module]] = {
    "xception": Xception,
    "unet": UNet,
    "unet_xception": XceptionUNet,
    "unet_resnet34": ResNet34UNet,
    "resnet34": ResNet34,
    "fpn_resnet34": FPNResNet34,
    "deeplabv3plus_resnet34": DeepLabV3PlusResNet34,
    "unet_xception_2head": XceptionUNetTwoHead,
    "efficientnet_b4": EfficientNetB4,
    "unet_efficientnet_b4": EfficientNetB4UNet,
}


def create_model(
    name: str,
    *,
    rngs: nnx.Rngs,
    ops: Ops = STOCK,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    **kwargs,
) -> nnx.Module:
    """Builds a model by its config name.

    Args:
      name: a key of `MODELS`.
      rngs: parameter RNG streams, e.g. `nnx.Rngs(0)`.
      ops: the operation set (`STOCK`: flax/lax's own; `ffjax.state.model_ops` picks the
        platform's fast set).
      dtype: computation dtype (e.g. jnp.bfloat16); every layer receives it.
      param_dtype: parameter dtype (keep float32 for bf16 mixed precision).
      **kwargs: the model class's own options (e.g. `depth`, `base_width` for 'unet',
        `num_outputs`, `width`, `middle_blocks` for 'xception').

    Returns:
      The initialised model.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: valid names are {sorted(MODELS)}")
    return MODELS[name](rngs=rngs, ops=ops, dtype=dtype, param_dtype=param_dtype, **kwargs)


def flops_per_image(name: str, size: int, **kwargs) -> float:
    """FLOPs of one inference forward pass on a size x size image, from XLA's cost analysis.

    The model is built abstractly (no parameter memory) and the forward at batch 1 is
    compiled for the default backend, which takes seconds to a minute on CPU.

    Args:
      name: a key of `MODELS`.
      size: image side in pixels (299 for Xception, 256 for the U-Nets by convention).
      **kwargs: passed to `create_model` (e.g. dtype, ops, depth).

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
    "MODELS",
    "STOCK",
    "Ops",
    "ResNet34UNet",
    "UNet",
    "Xception",
    "XceptionUNet",
    "create_model",
    "flops_per_image",
]
