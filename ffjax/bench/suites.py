"""Named sets of benchmark cases.

`accelerator` measures the three reference models on one GPU/TPU in bf16 and fp32 at a batch
that fills the device. `torch_reference` emits exactly the rows of the PyTorch CPU reference suite
(/work/shared/bench/torch_reference: timm `legacy_xception`, smp `Unet` with Xception and
ResNet-34 encoders), with the same batch, image sizes, loss (BCE with logits on a random
binary mask or label) and optimizer (AdamW), so its `summarize.py` can put them side by side.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ffjax import configs


@dataclasses.dataclass(frozen=True)
class SuiteModel:
    """One model of a suite: the name its rows carry, its config and input size."""

    name: str                      # model key shared with the PyTorch reference rows
    config_file: str               # a packaged config (ffjax/configs/)
    image_size: int
    overrides: tuple[tuple[str, Any], ...] = ()


# What the PyTorch side trains: BCEWithLogitsLoss alone, torch.optim.AdamW defaults
# (lr 1e-3, weight decay 0.01), no clipping, no schedule, no augmentation.
TORCH_REFERENCE_TRAINING = (
    ("optimizer", "adamw"),
    ("learning_rate", 1e-3),
    ("weight_decay", 0.01),
    ("grad_clip_norm", 0.0),
    ("grad_accum_steps", 1),
    ("schedule", "constant"),
    ("warmup_steps", 0),
    ("loss.pos_weight", 1.0),
    ("loss.dice_weight", 0.0),
    # The PyTorch side trains on its batch as it is: no device augmentation in the step either.
    ("augment.flip", False),
    ("augment.scale_jitter", 0.0),
    ("augment.color_jitter", 0.0),
    ("augment.blur_prob", 0.0),
)

# The three reference models as the project trains them (the configs' own loss and optimizer).
REFERENCE_MODELS = (
    SuiteModel("xception_cls", "xception_cls", 299, (("model_kwargs.num_outputs", 1),)),
    SuiteModel("unet_xception", "default", 256),
    SuiteModel("unet_resnet34", "default", 256, (("model", "unet_resnet34"),)),
)

SUITES: dict[str, dict[str, Any]] = {
    # One GPU or TPU chip in a few minutes: bf16 and fp32, train and eval, each at the
    # largest power-of-two batch whose step fits in 70 % of device memory ("fit").
    "accelerator": {
        "models": REFERENCE_MODELS,
        "batch_sizes": ("fit",),
        "modes": ("train", "eval"),
        "precisions": ("bf16", "fp32"),
        "training": (),
    },
    "torch_reference": {
        "models": REFERENCE_MODELS,
        "batch_sizes": (8,),
        "modes": ("train", "eval"),
        "precisions": ("fp32",),
        "training": TORCH_REFERENCE_TRAINING,
    },
}


def apply_overrides(config: Any, overrides: tuple[tuple[str, Any], ...]) -> Any:
    """Sets dotted fields (`loss.dice_weight`) on a config; new keys allowed in model_kwargs."""
    return configs.set_fields(config, dict(overrides), "bench overrides")


def suite_configs(name: str) -> list[tuple[SuiteModel, Any]]:
    """(model entry, ready config) for every model of suite `name`."""
    if name not in SUITES:
        raise ValueError(f"--suite={name!r} is not one of {sorted(SUITES)}.")
    suite = SUITES[name]
    out = []
    for entry in suite["models"]:
        config = configs.load(entry.config_file)
        apply_overrides(config, suite["training"] + entry.overrides)
        out.append((entry, config))
    return out
