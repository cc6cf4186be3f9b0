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
from ffjax.evaluation.report import EvalResult, write_report, write_side_by_side


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

    def open(self, split: str, dataset_cfg: Any = None) -> pipeline.Split:
        """The split of the run's dataset, or of `dataset_cfg` (another dataset), opened once."""
        dataset_cfg = self.config.dataset if dataset_cfg is None else dataset_cfg
        key = (dataset_cfg.name, dataset_cfg.config_name, split)
        if key not in self._splits:
            self._splits[key] = pipeline.open_split(dataset_cfg, split)
        return self._splits[key]

    def evaluate_split(self, model_state, split: str, *, step: int, workdir: str, max_examples: int | None = None,
                       validation: dict | None = None, dataset_cfg: Any = None) -> EvalResult:
        """Evaluates a model on `split` and writes the report.

        Args:
          model_state: `(params, rest)`: the model's parameters and BatchNorm statistics.
          split: the dataset split.
          step: the checkpoint step, recorded in the report.
          workdir: the run folder; the report goes to `workdir/eval/eval_<split>.{json,md}`
            (`eval_<dataset>_<split>` for another dataset).
          max_examples: evaluate only the first examples (a quick look).
          validation: the validation record stored with the checkpoint (`split`, `step`,
            `best_threshold`): on any other split its threshold gives the calibrated
            accuracy, and the report names the step it was chosen at.
          dataset_cfg: another dataset than the run's (`config.dataset`'s fields): a
            cross-dataset evaluation (no pixel metrics where its fakes carry no masks).
        """
        cross = dataset_cfg is not None and dataset_cfg.name != self.config.dataset.name
        data = self.open(split, dataset_cfg)
        per_process = self.config.eval_batch_size // jax.process_count()
        outdir = f"{paths.resolve(workdir)}/eval"
        calibrated, calibrated_from = None, None
        if (cross or split != self.config.dataset.eval_split) and validation and validation.get("best_threshold") is not None:
            calibrated = float(validation["best_threshold"])
            calibrated_from = f"{validation.get('split')} at step {validation.get('step')}"
        protocol = {**_dataset_protocol(data), "checkpoint_step": int(step), "calibrated_threshold_from": calibrated_from,
                    "evaluation": "cross-dataset" if cross else "in-domain"}
        if cross:
            protocol["trained_on"] = f"{self.config.dataset.name}/{self.config.dataset.config_name}"
        result = self.evaluator.evaluate(
            tuple(model_state),
            pipeline.eval_batches(data, per_process, max_examples=max_examples),
            calibrated_threshold=calibrated,
            protocol=protocol,
            pixel_metrics=data.has_masks,
        )
        if jax.process_index() == 0:
            paths.path(outdir).mkdir(parents=True, exist_ok=True)
        write_report(result, outdir, split, protocol, name=f"{dataset_cfg.name}_{split}" if cross else None)
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


CROP_KEYS = ("image_size", "crop_scale", "crop_source")


def cross_dataset_config(config: Any, dataset: str, config_name: str | None, split: str, trained: dict) -> Any:
    """`config.dataset` pointed at another built dataset (same data_dir).

    Args:
      config: the run's config.
      dataset: `celebdf_v2`, `dfdc` (or `faceforensics`).
      config_name: the build to read; None picks the one build of `dataset` whose crops
        (image_size, crop_scale, crop_source) are the training data's.
      split: the split that must be in that build.
      trained: the training data's build settings (`dataset_build` in the checkpoint).

    Returns:
      A copy of `config.dataset` (name and config_name replaced).
    """
    import json
    from pathlib import Path

    from ffjax.data import store

    dataset_cfg = config.dataset.copy_and_resolve_references()
    with dataset_cfg.unlocked():
        dataset_cfg.name = dataset
    if config_name is not None:
        with dataset_cfg.unlocked():
            dataset_cfg.config_name = config_name
        return dataset_cfg
    base = Path(config.dataset.data_dir).expanduser() / dataset
    builds = {}
    for folder in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            version = store.dataset_dir(config.dataset.data_dir, folder.name, name=dataset)
        except (FileNotFoundError, ValueError):
            continue
        manifest = version / f"manifest_{split}.json"
        settings = json.loads(manifest.read_text()).get("config", {}) if manifest.is_file() else {}
        builds[folder.name] = {k: settings.get(k) for k in CROP_KEYS}
    matching = [name for name, crops in builds.items() if all(trained.get(k) in (None, v) for k, v in crops.items())]
    if len(matching) != 1:
        raise ValueError(
            f"--dataset {dataset}: {'no' if not matching else 'more than one'} build with split {split!r} under {base} "
            f"has the training crops ({ {k: trained.get(k) for k in CROP_KEYS} }); builds there: {builds or 'none'}. "
            f"Build one (`ffjax build-data --dataset {dataset} --image_size {trained.get('image_size')} ...`) "
            "or name it with --dataset_config."
        )
    with dataset_cfg.unlocked():
        dataset_cfg.config_name = matching[0]
    return dataset_cfg


def evaluate_checkpoint(config: Any, workdir: str, *, split: str = "test", checkpoint: str = "latest",
                        dataset: str | None = None, dataset_config: str | None = None) -> EvalResult:
    """Restores a checkpoint's model (parameters and statistics only) and evaluates it on `split`.

    Args:
      config: the run's config (model, dataset, thresholds).
      workdir: the training run's folder.
      split: the dataset split to evaluate.
      checkpoint: 'latest', 'best', or a step number.
      dataset: another built dataset than the run's (`celebdf_v2`, `dfdc`): a cross-dataset
        evaluation. The run's own test split is scored too (unless a report of this
        checkpoint is there) and `eval/cross_dataset.{md,json}` sets them side by side.
      dataset_config: that dataset's build (default: the one with the training crops).

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
    trained = meta.get("dataset_build") or {}
    runner = SplitEvaluator(config, mesh, graphdef)
    if dataset is None or (dataset == config.dataset.name and dataset_config in (None, config.dataset.config_name)):
        _check_crops_match(trained, runner.open(split), workdir)
        return runner.evaluate_split(model_state, split, step=step, workdir=workdir, validation=meta.get("validation"))
    dataset_cfg = cross_dataset_config(config, dataset, dataset_config, split, trained)
    _check_crops_match(trained, runner.open(split, dataset_cfg), workdir)
    result = runner.evaluate_split(model_state, split, step=step, workdir=workdir, validation=meta.get("validation"),
                                   dataset_cfg=dataset_cfg)
    outdir = paths.path(f"{paths.resolve(workdir)}/eval")
    in_domain = _report_at(outdir / "eval_test.json", step)
    if in_domain is None:
        runner.evaluate_split(model_state, "test", step=step, workdir=workdir, validation=meta.get("validation"))
        in_domain = _report_at(outdir / "eval_test.json", step)
    reports = {f"{in_domain['protocol'].get('dataset')} test (in-domain)": in_domain}
    for path in sorted(outdir.glob("eval_*_*.json")):
        report = _report_at(path, step)
        if report and report.get("protocol", {}).get("evaluation") == "cross-dataset":
            reports[f"{report['protocol'].get('dataset')} {report['protocol'].get('split')} (cross-dataset)"] = report
    if jax.process_index() == 0:
        write_side_by_side(outdir / "cross_dataset", reports)
    return result


def _report_at(path, step: int) -> dict | None:
    """A written report (JSON) if it exists and is of checkpoint `step`, else None."""
    import json

    if not path.exists():
        return None
    report = json.loads(path.read_text())
    return report if report.get("protocol", {}).get("checkpoint_step") == step else None
