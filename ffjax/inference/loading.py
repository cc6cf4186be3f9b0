"""A training checkpoint restored for inference: the model rebuilt from its stored config.

`ffjax predict` and the demo load a run directory with `load_model` (parameters and
BatchNorm statistics only; no optimizer is built or read); the crop settings the model was
trained with come from `crop_settings`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections

from ffjax import checkpoints, models, paths, sharding, state as state_lib, tasks
from ffjax.data import pipeline


@dataclasses.dataclass
class LoadedModel:
    """A restored checkpoint, ready for inference.

    Attributes:
      config: the training config (from the checkpoint, or the one given).
      graphdef: the model's static structure.
      state: (params, rest) placed replicated on `mesh`.
      task: the `ffjax.tasks.Task` of the model, with the config's settings.
      step: the checkpoint's step.
      folder: the checkpoint folder it came from.
      mesh: the device mesh.
    """

    config: Any
    graphdef: Any
    state: tuple
    task: tasks.Task
    step: int
    folder: Any  # epath.Path: a local folder or a gs:// URL
    mesh: Any
    dataset_build: dict  # the builder settings of the training data, from the checkpoint


def read_checkpoint_meta(workdir, which: str = "latest") -> tuple[dict, int]:
    """The JSON record saved with a checkpoint (training config, model name, step).

    Args:
      workdir: the training run directory (or a folder of checkpoints).
      which: 'latest', 'best' or a step number.

    Returns:
      (meta, step).
    """
    workdir = paths.path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"--workdir {workdir}: no such folder (the run directory `ffjax train` wrote).")
    if which not in ("latest", "best") and not str(which).isdigit():
        raise ValueError(f"--checkpoint={which!r}: use 'latest', 'best' or a step number.")
    meta, step, _ = checkpoints.read_meta(str(workdir), str(which))
    return meta, step


def load_model(workdir, checkpoint: str = "latest", config=None) -> LoadedModel:
    """Restores a checkpoint's model for inference, rebuilding it from the stored config.

    Args:
      workdir: the training run directory.
      checkpoint: 'latest', 'best' or a step number.
      config: a config to build the model from instead of the stored one; restoring fails
        with a message naming both when the checkpoint holds another model.

    Returns:
      The `LoadedModel`.
    """
    meta, step = read_checkpoint_meta(workdir, checkpoint)
    workdir = paths.path(workdir)
    folder = paths.path(checkpoints.checkpoint_folder(str(workdir), str(checkpoint)))
    if config is None:
        if not isinstance(meta.get("config"), dict):
            raise ValueError(f"{folder}/{step}: the checkpoint stores no training config; pass --config (the config it was trained with).")
        config = ml_collections.ConfigDict(meta["config"])
        config.lock()
    if config.model not in models.MODELS:
        raise ValueError(f"{folder}/{step}: model {config.model!r} is not one of {sorted(models.MODELS)} (made by another ffjax version?).")
    if jax.process_count() > 1:
        raise ValueError("ffjax predict runs in one process; start it without jax.distributed.")
    mesh = sharding.make_mesh()
    # Shapes only: nothing is allocated until the restore writes straight into place.
    graphdef, target, _ = state_lib.abstract_model_state(config, mesh)
    try:
        restored, _, step = checkpoints.restore_model_state(str(workdir), target, which=str(checkpoint))
    except ValueError as e:
        raise ValueError(
            f"--workdir {workdir} --checkpoint {checkpoint}: the checkpoint does not hold a {config.model!r} model "
            f"with {config.model_kwargs.to_dict()} (a checkpoint of another model or size?): {e}"
        ) from e
    return LoadedModel(
        config, graphdef, (restored["params"], restored["rest"]), tasks.from_config(config), int(step), folder, mesh,
        dict(meta.get("dataset_build") or {}),
    )


def crop_settings(
    config, image_size: int | None = None, crop_scale: float | None = None, recorded: dict | None = None
) -> tuple[int, float, str]:
    """The crop size and scale the model was trained on: given values, else recorded ones.

    Checkpoints record the builder settings of their training data (`recorded`); older ones
    only name the dataset, whose manifest records them. Without either, both must be given.

    Returns:
      (image_size, crop_scale, where they came from).
    """
    if image_size is not None and crop_scale is not None:
        return int(image_size), float(crop_scale), "flags"
    if recorded and "image_size" in recorded and "crop_scale" in recorded:
        size = int(image_size if image_size is not None else recorded["image_size"])
        scale = float(crop_scale if crop_scale is not None else recorded["crop_scale"])
        return size, scale, "checkpoint"
    ds = config.dataset
    try:
        folder = Path(pipeline.dataset_dir(ds.data_dir, ds.name, ds.config_name))
        manifests = sorted(folder.glob("manifest_*.json"))
        built = json.loads(manifests[0].read_text())["config"] if manifests else {}
    except (FileNotFoundError, KeyError, ValueError):
        folder, built = None, {}
    if "image_size" not in built and image_size is None or "crop_scale" not in built and crop_scale is None:
        raise ValueError(
            f"The crop size and scale the model was trained with are unknown: its dataset "
            f"({ds.data_dir}/{ds.name}/{ds.config_name}) is not here to read them from. Pass --image_size and "
            f"--crop_scale (the dataset's build settings, e.g. 256 and 1.3)."
        )
    size = int(image_size if image_size is not None else built["image_size"])
    scale = float(crop_scale if crop_scale is not None else built["crop_scale"])
    return size, scale, f"dataset {folder}"
