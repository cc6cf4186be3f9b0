"""Data-parallel training: `train_and_evaluate(config, workdir)`.

The step is a pure module-level function compiled once with `jax.jit` over a one-axis device
mesh: the global batch is sharded over `data`, parameters and optimizer state are replicated
(and donated), and BatchNorm statistics come out over the global batch because `jit` sees the
whole batch. The same code runs on one CPU, eight GPUs or a multi-host TPU slice.
"""


import functools
import logging
import math
import signal
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metrics as clu_metrics
from clu import parameter_overview
from flax import nnx

from ffjax import checkpoints, cluster, convert, evaluation, failure_watch, models, optim, paths, sharding, state as state_lib, tasks, workdir_lock, writers
from ffjax.data import augment as augment_lib
from ffjax.data import pipeline
from ffjax.platform import selection
from ffjax.state import TrainState


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    bce: clu_metrics.Average.from_output("bce")
    grad_norm: clu_metrics.Average.from_output("grad_norm")
    learning_rate: clu_metrics.LastValue.from_output("learning_rate")


def validate_config(config: Any, mesh: jax.sharding.Mesh) -> None:
    """Checks settings that would otherwise fail after minutes of compiling, naming each."""
    if config.model not in models.MODELS:
        raise ValueError(f"config.model={config.model!r} is not one of {sorted(models.MODELS)}.")
    sharding.check_batch_size(config.batch_size, mesh, "config.batch_size")
    sharding.check_batch_size(config.eval_batch_size, mesh, "config.eval_batch_size")
    if config.grad_accum_steps < 1:
        raise ValueError(f"config.grad_accum_steps={config.grad_accum_steps} must be >= 1.")
    if config.optimizer not in optim.OPTIMIZERS:
        raise ValueError(f"config.optimizer={config.optimizer!r} is not one of {optim.OPTIMIZERS}.")
    state_lib.dtype(config.dtype), state_lib.dtype(config.param_dtype)
    for field in ("dtype", "param_dtype"):
        if getattr(config, field) == "float16":
            # float16 gradients underflow without loss scaling, which this trainer does not do;
            # bfloat16 has float32's range and runs on the same tensor cores.
            raise ValueError(
                f"config.{field}='float16' is not supported for training (no loss scaling): "
                f"use --config.{field}=bfloat16 (float32's range, the same speed on GPUs and TPUs)."
            )
    tasks.from_config(config)  # frame_score_topk in range
    augment_lib.from_config(config.augment, config.seed)  # scale_jitter and blur_sigma in range
    # Fails with the folder and the build command when the dataset is missing.
    pipeline.dataset_dir(config.dataset.data_dir, config.dataset.name, config.dataset.config_name)


def train_step(
    state: TrainState, batch: dict[str, jax.Array], *, graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
    task: tasks.Task, dtype: Any, schedule: optax.Schedule, grad_accum_steps: int,
    augment: augment_lib.DeviceAugment | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a global batch. Pure: everything it uses comes in as arguments.

    A non-finite loss or gradient leaves the state unchanged (so a checkpoint is never
    poisoned) and is reported in the metrics; the host loop stops with the step named.
    An optional `batch["stop"]` (one flag per row: its process was asked to stop) comes back
    reduced over every process as `metrics["stop"]`, so all hosts agree when to stop.
    `augment` (flip, scale, blur, colour) runs first, keyed by `batch["position"]`.
    """
    step_rng = jax.random.fold_in(state.rng, state.step)
    batch = dict(batch)
    stop = batch.pop("stop", None)
    position = batch.pop("position", None)
    if augment is not None:
        if position is None:
            raise ValueError("config.augment asks for device augmentation, but the batch has no 'position' "
                             "(uint32 [B, 2], augment.positions): feed batches from pipeline.train_dataset.")
        batch["image"], batch["mask"] = augment(batch["image"], batch["mask"], position)

    def loss_fn(params: nnx.State):
        # copy=True: fresh Variables at this trace level (BatchNorm mutates its statistics).
        model = nnx.merge(graphdef, params, state.rest, copy=True)
        if _has_rng_streams(state.rest):
            nnx.reseed(model, dropout=step_rng)
        logits = task.forward(model, batch["image"], train=True, dtype=dtype)
        loss, parts = task.loss(logits, batch)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return loss, (parts, new_rest)

    (loss, (parts, new_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        rest=keep(new_rest, state.rest),
        opt_state=keep(opt_state, state.opt_state),
    )
    # Schedules count optimizer updates, which gradient accumulation makes rarer than steps.
    lr = schedule(state.step // grad_accum_steps)
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": lr, **parts}
    if stop is not None:
        metrics["stop"] = jnp.max(stop)
    return new_state, metrics


def _has_rng_streams(rest: nnx.State) -> bool:
    return any(isinstance(v, nnx.RngState) for _, v in nnx.to_flat_state(rest))


def compile_train_step(config: Any, mesh: jax.sharding.Mesh, graphdef: nnx.GraphDef, tx: optax.GradientTransformation) -> Any:
    """`train_step` jitted with explicit shardings, the state donated and the platform's
    compile options."""
    step = functools.partial(
        train_step, graphdef=graphdef, tx=tx, task=tasks.from_config(config), dtype=state_lib.dtype(config.dtype),
        schedule=optim.learning_rate_schedule(config), grad_accum_steps=config.grad_accum_steps,
        augment=augment_lib.from_config(config.augment, config.seed),
    )
    repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    return jax.jit(
        step, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0,
        compiler_options=selection.compiler_options(mesh.devices.flat),
    )


# `ffjax train` exits with this after a clean save on SIGTERM (128 + 15, what a shell reports
# for a process killed by SIGTERM): stopped and resumable, not finished. 0 means the run
# reached config.num_train_steps.
PREEMPTED_EXIT_CODE = 143


class Preempted(Exception):
    """Raised by `train_and_evaluate` after a SIGTERM once every host has saved the same step.

    Attributes:
      step: the step that was checkpointed; rerunning the same command resumes from it.
    """

    def __init__(self, step: int):
        super().__init__(f"Stopped by SIGTERM at step {step}, checkpoint saved; rerun the same command to resume.")
        self.step = step

    # Every host raises it at the same step: not a failure the others must be told about.
    agreed_by_all_hosts = True


class _Preempted:
    """Remembers a SIGTERM so the loop can checkpoint and exit cleanly (preemption)."""

    def __init__(self):
        self.flag = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, no preemption support
            self._previous = None
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM: saving a checkpoint at the end of this step, then exiting.")
        self.flag = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _meta(config: Any, split: pipeline.Split, step: int, validation: dict | None) -> dict:
    """What a checkpoint records beside the state: enough to rebuild the model and its input
    crops (`dataset_build`: image_size, crop_scale...) without the dataset at hand, and the
    latest validation's decision threshold with its step (`validation`), which `ffjax eval`
    applies on test as the calibrated threshold of this checkpoint."""
    return {
        "config": config.to_dict(),
        "data_fingerprint": split.fingerprint(),
        "dataset_build": split.build_settings,
        "step": int(step),
        # Global: the input order is defined over the whole split, so any process count resumes it.
        "data_position": {"next_batch": int(step), "global_batch": int(config.batch_size)},
        "model": config.model,
        "validation": validation,
    }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains `config.model` on `config.dataset`, evaluating and checkpointing as configured.

    Restarting in the same `workdir` resumes from the latest checkpoint (model, optimizer,
    step, RNG and data position), and reaches the same parameters as an uninterrupted run on
    the same device count.

    Args:
      config: a config from `configs/`.
      workdir: where checkpoints, metrics.jsonl, TensorBoard files and eval reports go (a
        local folder or a gs:// URL every host shares); one run at a time.

    Returns:
      The last evaluation's results (or {} if none ran).

    Raises:
      Preempted: stopped by SIGTERM after every host saved the same step (resumable).
      WorkdirInUse: another live run holds `workdir`.
    """
    cluster.initialize(config)
    mesh = sharding.make_mesh()
    validate_config(config, mesh)
    workdir = paths.resolve(workdir)
    # A host that fails tells the others, which stop instead of waiting in the next collective.
    with workdir_lock.WorkdirLock(workdir), failure_watch.FailureWatch() as watch:
        return _train_and_evaluate(config, workdir, mesh, watch)


# Settings that change what a checkpoint's arrays mean or what data it was fitted on: a resume
# with any of them changed is refused unless config.allow_config_change.
_MODEL_AND_DATA = ("model", "model_kwargs", "dtype", "param_dtype", "optimizer", "dataset.name",
                   "dataset.config_name", "dataset.train_split", "dataset.train_methods")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            # The saved config went through JSON: its tuples came back as lists.
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def check_resume_config(saved: dict | None, config: Any, workdir: str) -> None:
    """Says which settings differ from the checkpoint's; refuses model/data changes.

    Args:
      saved: the config stored with the latest checkpoint (None: nothing to compare).
      config: this run's config.
      workdir: for the messages.

    Raises:
      ValueError: a model, dtype, optimizer or dataset setting changed and
        `config.allow_config_change` is False; the message names every such field.
    """
    if not saved:
        return
    old, new = _flat(saved), _flat(config.to_dict())
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k != "allow_config_change")
    if not changed:
        return
    described = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
    blocking = [k for k in changed if any(k == f or k.startswith(f + ".") for f in _MODEL_AND_DATA)]
    if blocking and not config.get("allow_config_change"):
        raise ValueError(
            f"--workdir {workdir} holds a run with other model or data settings: "
            f"{', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in blocking)}. Resume with the settings it "
            "was trained with, use another --workdir, or pass --config.allow_config_change=True."
        )
    logging.warning("Resuming %s with changed settings: %s", workdir, described)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, mesh: jax.sharding.Mesh,
                        watch: failure_watch.FailureWatch) -> dict:
    """`train_and_evaluate` once the workdir is held."""
    train_split = pipeline.open_split(config.dataset, config.dataset.train_split)
    if tasks.from_config(config).uses_masks and not train_split.has_masks:
        # All-zero masks would teach "nothing is manipulated" without a word.
        raise ValueError(
            f"config.dataset {config.dataset.name}/{config.dataset.config_name} split {config.dataset.train_split!r} "
            f"has no pixel masks, and model {config.model!r} trains on them: train a classifier on it (e.g. "
            "--config.model=resnet34), build it with masks (DFDC: --mask_mode derived), or evaluate on it only "
            "(ffjax eval --dataset)."
        )
    fingerprint = train_split.fingerprint()
    tx = optim.make_optimizer(config)
    graphdef, state = state_lib.create_train_state(config, mesh, tx)
    ckpt = checkpoints.Checkpointer(
        workdir, keep=config.keep_checkpoints, best_metric=config.best_metric, best_mode=config.best_mode
    )
    try:
        saved_config = checkpoints.read_meta(workdir, "latest")[0].get("config")
    except (FileNotFoundError, ValueError):
        saved_config = None  # no checkpoint yet, or an unreadable one (restore_latest decides)
    check_resume_config(saved_config, config, workdir)
    restored = ckpt.restore_latest(checkpoints.abstract_like(state))
    validation = None
    next_batch = 0
    if restored is not None:
        state, meta = restored
        validation = meta.get("validation")
        position = meta.get("data_position") or {"next_batch": int(meta.get("step", 0)), "global_batch": config.batch_size}
        next_batch = int(position["next_batch"])
        if int(position["global_batch"]) != config.batch_size:
            logging.warning(
                "Resuming with config.batch_size=%d where the checkpoint used %d: the input continues at global "
                "batch %d of the new size, not at the example where it stopped.",
                config.batch_size, position["global_batch"], next_batch,
            )
        if meta.get("data_fingerprint") != fingerprint:
            logging.warning(
                "Resuming from a checkpoint made on other data (fingerprint %s, now %s): the dataset was rebuilt.",
                meta.get("data_fingerprint"), fingerprint,
            )
        logging.info("Resumed from %s at step %d.", workdir, int(state.step))
    elif config.get("init_from"):
        # A fresh run starting from converted weights (ImageNet encoders, smp models). The
        # optimizer states of every optimizer here start at zero whatever the parameters are.
        params, rest, conversion = convert.init_from(config.init_from, config.model, state.params, state.rest)
        state = state.replace(params=params, rest=rest)
        logging.info("config.init_from: %s", convert.describe(conversion, config.init_from))
    start_step = int(jax.device_get(state.step))
    data_iter = iter(pipeline.train_dataset(train_split, config, config.batch_size, start_batch=next_batch))

    writer = writers.MetricWriter(workdir, resume_step=start_step)
    if start_step == 0:
        writer.write_hparams({k: str(v) for k, v in config.to_dict().items()})
        if jax.process_index() == 0:
            logging.info("Parameters:\n%s", parameter_overview.get_parameter_overview(state.params.to_pure_dict()))

    step_fn = compile_train_step(config, mesh, graphdef, tx)
    evaluator = evaluation.SplitEvaluator(config, mesh, graphdef)
    try:
        with _Preempted() as preempted:
            results = _train_loop(
                config, workdir, mesh, state, step_fn, data_iter, evaluator, ckpt, writer, train_split, start_step,
                preempted, validation,
            )
    except BaseException as e:
        watch.report(e)  # before the waits below, which may need the other hosts
        raise
    finally:
        # Also on an exception: the last good checkpoint must finish writing.
        ckpt.wait()
        ckpt.close()
        writer.close()
    return results


def _train_loop(config, workdir, mesh, state, step_fn, data_iter, evaluator, ckpt, writer, train_split, start_step, preempted,
                validation) -> dict:
    """The step loop of `train_and_evaluate`: train, log, evaluate, checkpoint, stop on SIGTERM."""
    progress = writers.Progress(config.num_train_steps, config.batch_size, start_step)
    train_metrics = None
    pending = None  # (step, metrics) of the previous step, checked one step late so the
    #                 host never waits for the device before dispatching the next step
    results: dict = {}
    step = start_step
    # Several hosts may see a SIGTERM at different steps (or only one of them gets it). Each
    # adds its flag to its rows of the batch; the step reduces them on device, and every host
    # reads that from the previous step, so all save the same step (one step after the signal).
    agree = jax.process_count() > 1
    stop = False
    while step < config.num_train_steps:
        local = next(data_iter)
        if agree:
            rows = len(next(iter(local.values())))
            local = dict(local, stop=np.full((rows,), preempted.flag, np.int32))
        batch = sharding.global_batch(local, mesh)
        state, metrics = step_fn(state, batch)
        step += 1
        if pending is not None:
            _check_finite(*pending)  # already read every step: the stop flag adds no wait
            if agree:
                stop = bool(jax.device_get(pending[1]["stop"]))
        if not agree:
            stop = preempted.flag
        pending = (step, metrics)
        update = TrainMetrics.single_from_model_output(**{k: v for k, v in metrics.items() if k != "stop"})
        train_metrics = update if train_metrics is None else train_metrics.merge(update)

        if step % config.log_every_steps == 0 or step == config.num_train_steps:
            _check_finite(*pending)
            writer.write_scalars(step, {f"train/{k}": v for k, v in train_metrics.compute().items()} | progress(step))
            train_metrics = None
        if config.eval_every_steps and (step % config.eval_every_steps == 0 or step == config.num_train_steps):
            results = evaluator.evaluate_split((state.params, state.rest), config.dataset.eval_split, step=step, workdir=workdir)
            headline = evaluation.headline(results)
            writer.write_scalars(step, {f"eval/{k}": v for k, v in headline.items()})
            validation = {"split": config.dataset.eval_split, "step": step, "best_threshold": results.best_threshold}
            ckpt.save_best(step, state, headline, _meta(config, train_split, step, validation))
        if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps or stop:
            _check_finite(*pending)
            ckpt.save(step, state, _meta(config, train_split, step, validation))
        if stop and step < config.num_train_steps:
            logging.warning("Stopped by SIGTERM at step %d; rerun the same command to resume.", step)
            ckpt.wait()
            raise Preempted(step)
    return results


def _check_finite(step: int, metrics: dict) -> None:
    loss = float(jax.device_get(metrics["loss"]))
    grad_norm = float(jax.device_get(metrics["grad_norm"]))
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise FloatingPointError(
            f"Non-finite loss or gradient at step {step} (loss={loss}, grad_norm={grad_norm}); the update was "
            f"not applied and training stopped. Lower config.learning_rate, enable config.grad_clip_norm, or "
            f"use config.dtype='float32'; the last checkpoint is intact."
        )
