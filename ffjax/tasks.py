"""The two tasks the paper compares, one object each: segmentation and classification.

A task owns what follows from the kind of output a model gives: the forward pass from uint8
pixels, the loss, the frame score (one fake probability per image) and what the evaluator
counts beside frames (pixel probabilities against masks). The trainer, the evaluator, predict
and the benchmark call these methods; nothing else in ffjax branches on the task's name.
A model names its task (`Model.task`); `from_config` builds the object with its settings.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from ffjax import models

# A frame's score is the mean probability of its most suspicious 1% of pixels: the mean over
# all pixels would let a small manipulated region (NeuralTextures changes little more than
# the mouth, a few % of a face crop) drown in the untouched background, while the single
# highest pixel would let one noisy pixel decide.
DEFAULT_TOPK_FRACTION = 0.01


def forward(model: Any, images: jax.Array, *, train: bool, dtype: Any = jnp.float32) -> jax.Array:
    """The model on uint8 pixels: [0, 255] becomes [0, 1] in `dtype`, then `model(x, train)`."""
    return model(images.astype(dtype) / jnp.asarray(255.0, dtype), train=train)


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


class Task(abc.ABC):
    """What every task provides (the methods are jit-compatible)."""

    name: ClassVar[str]
    uses_masks: ClassVar[bool]  # trained on and scored against pixel masks

    def forward(self, model: Any, images: jax.Array, *, train: bool, dtype: Any = jnp.float32) -> jax.Array:
        """The model's logits for uint8 images [B, H, W, 3]."""
        return forward(model, images, train=train, dtype=dtype)

    @abc.abstractmethod
    def loss(self, logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
        """(loss, parts to log) of a batch (the architecture's batch dict)."""

    @abc.abstractmethod
    def frame_score(self, logits: jax.Array) -> jax.Array:
        """float32 [B] in [0, 1]: each image's fake probability."""

    def pixel_probs(self, logits: jax.Array) -> jax.Array | None:
        """float32 [B, H, W] per-pixel fake probabilities, or None for a task without them."""
        return None

    @property
    @abc.abstractmethod
    def frame_score_rule(self) -> str:
        """How `frame_score` is made, in words (reports and predict's JSON)."""


@dataclasses.dataclass(frozen=True)
class Segmentation(Task):
    """Per-pixel logits [B, H, W, 1]; the frame score is the mean of the top-k pixel probabilities.

    Attributes:
      topk_fraction: the frame score averages the highest ceil(topk_fraction * H * W) pixel
        probabilities (at least one); 1.0 gives the plain mean.
      pos_weight: weight of fake pixels in the BCE.
      dice_weight: weight of the soft Dice term.
    """

    name: ClassVar[str] = "segmentation"
    uses_masks: ClassVar[bool] = True
    topk_fraction: float = DEFAULT_TOPK_FRACTION
    pos_weight: float = 1.0
    dice_weight: float = 0.5

    def __post_init__(self):
        try:
            fraction = float(self.topk_fraction)
        except (TypeError, jax.errors.ConcretizationTypeError) as e:
            raise TypeError(
                "topk_fraction must be a Python number (it fixes k, a static shape under jit); "
                f"got {type(self.topk_fraction).__name__}"
            ) from e
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"topk_fraction (config.frame_score_topk) must be in (0, 1]; got {self.topk_fraction}")

    @classmethod
    def from_config(cls, config: Any) -> Segmentation:
        loss = config.get("loss") or {}
        return cls(
            topk_fraction=float(config.get("frame_score_topk", DEFAULT_TOPK_FRACTION)),
            pos_weight=float(loss.get("pos_weight", 1.0)),
            dice_weight=float(loss.get("dice_weight", 0.5)),
        )

    def loss(self, logits, batch):
        return segmentation_loss(logits, batch["mask"], pos_weight=self.pos_weight, dice_weight=self.dice_weight)

    def _check(self, logits: jax.Array) -> None:
        if logits.ndim != 4 or logits.shape[-1] != 1:
            raise ValueError(f"segmentation logits must be [B, H, W, 1]; got shape {tuple(logits.shape)}")

    def frame_score(self, logits):
        self._check(logits)
        flat = logits.reshape(logits.shape[0], -1).astype(jnp.float32)
        k = min(flat.shape[1], max(1, math.ceil(float(self.topk_fraction) * flat.shape[1])))
        # Sigmoid is monotonic, so the top-k logits are the top-k probabilities.
        top = flat if k == flat.shape[1] else jax.lax.top_k(flat, k)[0]
        return jnp.mean(jax.nn.sigmoid(top), axis=1)

    def pixel_probs(self, logits):
        self._check(logits)
        return jax.nn.sigmoid(logits[..., 0].astype(jnp.float32))

    @property
    def frame_score_rule(self) -> str:
        return f"mean of the top {100 * self.topk_fraction:g}% pixel probabilities"


@dataclasses.dataclass(frozen=True)
class Classification(Task):
    """Logits [B, 1] (sigmoid) or [B, 2] (softmax, index 1 = fake) per image."""

    name: ClassVar[str] = "classification"
    uses_masks: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Any) -> Classification:
        del config
        return cls()

    def loss(self, logits, batch):
        return classification_loss(logits, batch["label"])

    def frame_score(self, logits):
        if logits.ndim != 2 or logits.shape[1] not in (1, 2):
            raise ValueError(
                "classifier logits must be [B, 1] (sigmoid) or [B, 2] (softmax, index 1 = fake) "
                f"to give a fake probability; got shape {tuple(logits.shape)}"
            )
        logits = logits.astype(jnp.float32)
        if logits.shape[1] == 1:
            return jax.nn.sigmoid(logits[:, 0])
        return jax.nn.softmax(logits, axis=-1)[:, 1]

    @property
    def frame_score_rule(self) -> str:
        return "classifier fake probability"


@dataclasses.dataclass(frozen=True)
class SegmentationClassification(Task):
    """Two heads on one encoder: `{'mask': [B, H, W, 1], 'frame': [B, 1]}` logits.

    Trained on both (segmentation loss + `frame_weight` x frame BCE). The frame score is the
    frame head's probability (`frame_score_from='head'`) or, as the paper reads it, the mask's
    top-k rule (`'mask'`); the pixel outputs are the mask head's.
    """

    name: ClassVar[str] = "segmentation_classification"
    uses_masks: ClassVar[bool] = True
    segmentation: Segmentation = Segmentation()
    frame_weight: float = 1.0
    frame_score_from: str = "head"

    def __post_init__(self):
        if self.frame_score_from not in ("head", "mask"):
            raise ValueError(f"config.frame_score_from={self.frame_score_from!r} must be 'head' or 'mask'.")

    @classmethod
    def from_config(cls, config: Any) -> SegmentationClassification:
        loss = config.get("loss") or {}
        return cls(segmentation=Segmentation.from_config(config), frame_weight=float(loss.get("frame_weight", 1.0)),
                   frame_score_from=str(config.get("frame_score_from", "head")))

    def loss(self, logits, batch):
        seg, parts = self.segmentation.loss(logits["mask"], batch)
        frame, _ = classification_loss(logits["frame"], batch["label"])
        return seg + self.frame_weight * frame, {**parts, "frame_bce": frame}

    def frame_score(self, logits):
        if self.frame_score_from == "mask":
            return self.segmentation.frame_score(logits["mask"])
        return Classification().frame_score(logits["frame"])

    def pixel_probs(self, logits):
        return self.segmentation.pixel_probs(logits["mask"])

    @property
    def frame_score_rule(self) -> str:
        if self.frame_score_from == "mask":
            return self.segmentation.frame_score_rule
        return "frame head's fake probability (a second head on the segmentation model's encoder)"


TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Segmentation, Classification, SegmentationClassification)}


def from_config(config: Any) -> Task:
    """The task of `config.model`, with the config's settings (frame score, loss weights)."""
    if config.model not in models.MODELS:
        raise ValueError(f"config.model={config.model!r} is not one of {sorted(models.MODELS)}.")
    return TASKS[models.MODELS[config.model].task].from_config(config)
