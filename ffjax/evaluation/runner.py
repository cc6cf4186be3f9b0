"""The evaluator bound to a run: its config, its dataset splits, its workdir and checkpoints.

`SplitEvaluator` is what the trainer validates with; `evaluate_checkpoint` is `ffjax eval`:
it restores parameters and BatchNorm statistics only (no optimizer is built or read).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh

from ffjax import checkpoints, cluster, paths, sharding, state as state_lib, tasks
from ffjax.data import pipeline
from ffjax.evaluation.evaluator import Evaluator
from ffjax.evaluation.report import EvalResult, write_report


def _dataset_protocol(split) -> dict:
    """What the builder did to the frames (its recorded settings), for the report."""
    built = split.build_settings
    return {
        "dataset": f"{split.info.get('name')}/{split.info.get('configName')}:{split.info.get('version')}",
        "frames_per_video": built.get("frames_per_video"),
        "crop_scale": built.get("crop_scale"),
    }


class SplitEvaluator:
    """An `Evaluator` bound to a run config: opens splits, writes reports under workdir/eval.

    The compiled step is kept across calls, so periodic validation compiles once per run.
    """

    def __init__(self, config: Any, mesh: Mesh, graphdef):
        """Args: config: the run config; mesh: the run's mesh; graphdef: the model's static part."""
        self.config = config
        task = tasks.from_config(config)
        self.evaluator = Evaluator(
            state_lib.predict_fn(graphdef, task),
            mesh,
            task=task,
            threshold=config.threshold,
            video_aggregation=config.video_aggregation,
        )
        self._splits: dict[str, Any] = {}

    def evaluate_split(self, model_state, split: str, *, step: int, workdir: str, max_examples: int | None = None,
                       validation: dict | None = None) -> EvalResult:
        """Evaluates a model on `split` and writes the report.

        Args:
          model_state: `(params, rest)`: the model's parameters and BatchNorm statistics.
          split: the dataset split.
          step: the checkpoint step, recorded in the report.
          workdir: the run folder; the report goes to `workdir/eval/eval_<split>.{json,md}`.
          max_examples: evaluate only the first examples (a quick look).
          validation: the validation record stored with the checkpoint (`split`, `step`,
            `best_threshold`): on any other split its threshold gives the calibrated
            accuracy, and the report names the step it was chosen at.
        """
        if split not in self._splits:
            self._splits[split] = pipeline.open_split(self.config.dataset, split)
        data = self._splits[split]
        per_process = self.config.eval_batch_size // jax.process_count()
        outdir = f"{paths.resolve(workdir)}/eval"
        calibrated, calibrated_from = None, None
        if split != self.config.dataset.eval_split and validation and validation.get("best_threshold") is not None:
            calibrated = float(validation["best_threshold"])
            calibrated_from = f"{validation.get('split')} at step {validation.get('step')}"
        protocol = {**_dataset_protocol(data), "checkpoint_step": int(step), "calibrated_threshold_from": calibrated_from}
        result = self.evaluator.evaluate(
            tuple(model_state),
            pipeline.eval_batches(data, per_process, max_examples=max_examples),
            calibrated_threshold=calibrated,
            protocol=protocol,
        )
        if jax.process_index() == 0:
            paths.path(outdir).mkdir(parents=True, exist_ok=True)
        write_report(result, outdir, split, protocol)
        return result


def headline(result: EvalResult) -> dict[str, float]:
    """The overall scalars (`frame/auc`, `pixel/iou_fake`, `video/auc`...), no breakdown rows."""
    return {k: v for k, v in result.scalars().items() if k.count("/") == 1}


def _check_crops_match(trained: dict, split: pipeline.Split, workdir: str) -> None:
    """Refuses a dataset whose crops differ from the training data's (size, scale, rule).

    A 32-px model scored on 64-px crops runs without error and means nothing.
    """
    here = split.build_settings or {}
    differ = [k for k in ("image_size", "crop_scale", "crop_source") if k in trained and k in here and trained[k] != here[k]]
    if differ:
        raise ValueError(
            f"--workdir {workdir} was trained on crops with "
            f"{', '.join(f'{k}={trained[k]!r}' for k in differ)} but {split.path} has "
            f"{', '.join(f'{k}={here[k]!r}' for k in differ)}: evaluate on a build with the training settings "
            "(config.dataset.config_name)."
        )


def evaluate_checkpoint(config: Any, workdir: str, *, split: str = "test", checkpoint: str = "latest") -> EvalResult:
    """Restores a checkpoint's model (parameters and statistics only) and evaluates it on `split`.

    Args:
      config: the run's config (model, dataset, thresholds).
      workdir: the training run's folder.
      split: the dataset split to evaluate.
      checkpoint: 'latest', 'best', or a step number.

    Returns:
      The EvalResult; the report is written to `workdir/eval/`. On a split other than the
      validation split, the calibrated accuracy uses the threshold validation chose for this
      checkpoint (stored with it), never a report another step wrote.
    """
    cluster.initialize(config)
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.eval_batch_size, mesh, "config.eval_batch_size")
    graphdef, target, _ = state_lib.abstract_model_state(config, mesh)
    restored, meta, step = checkpoints.restore_model_state(workdir, target, which=checkpoint)
    model_state = (restored["params"], restored["rest"])
    _check_crops_match(meta.get("dataset_build") or {}, pipeline.open_split(config.dataset, split), workdir)
    return SplitEvaluator(config, mesh, graphdef).evaluate_split(
        model_state, split, step=step, workdir=workdir, validation=meta.get("validation")
    )
