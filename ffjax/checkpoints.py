"""Checkpoints: the latest N for resuming, and the best one by a validation metric.

Each checkpoint holds the train state (model, optimizer, step, RNG) and a JSON record of the
config, the data fingerprint and the data position, so a run can be resumed exactly and
audited later. The data position is global (the next global batch: the input order is defined
over the whole split, see `pipeline.train_dataset`), not one iterator file per process, so a
checkpoint resumes on any process count and any device count that divides the global batch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from ffjax import paths

_STATE, _META = "state", "meta"


def abstract_like(tree: Any) -> Any:
    """Shape/dtype/sharding placeholders of `tree`: the restore target that keeps types exact."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
    """`workdir/checkpoints` (latest `keep`) and `workdir/best` (one, by `best_metric`)."""

    def __init__(self, workdir: str, *, keep: int = 3, best_metric: str | None = None, best_mode: str = "max"):
        self.workdir = paths.resolve(workdir)
        self._latest = ocp.CheckpointManager(
            f"{self.workdir}/checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )
        self._best = None
        self.best_metric = best_metric
        if best_metric:
            def score(metrics: dict) -> float:
                value = metrics.get(best_metric)
                # An undefined metric (e.g. AUC with one class absent) never wins.
                if value is None or not math.isfinite(value):
                    return -math.inf if best_mode == "max" else math.inf
                return float(value)

            self._best = ocp.CheckpointManager(
                f"{self.workdir}/best",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, best_fn=score, best_mode=best_mode, keep_checkpoints_without_metrics=False, create=True
                ),
            )

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Saves (asynchronously) the state and `meta` (which carries the data position)."""
        args = {
            _STATE: ocp.args.StandardSave(state),
            _META: ocp.args.JsonSave(meta),
        }
        if not self._latest.save(step, args=ocp.args.Composite(**args), force=True):
            logging.info("Checkpoint for step %d already exists; not overwritten.", step)

    def save_best(self, step: int, state: Any, metrics: dict, meta: dict) -> None:
        """Offers `state` to the best-by-metric manager; it keeps it only if it is the best."""
        if self._best is None:
            return
        flat = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self._best.save(
            step,
            args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)}),
            metrics=flat,
            force=True,
        )

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
        """Restores the newest checkpoint into `abstract_state`'s types and shardings.

        Returns:
          (state, meta), or None when the workdir holds no checkpoint yet.
        """
        step = self._latest.latest_step()
        if step is None:
            return None
        args = {_STATE: ocp.args.StandardRestore(abstract_state), _META: ocp.args.JsonRestore()}
        restored = self._latest.restore(step, args=ocp.args.Composite(**args))
        return restored[_STATE], restored[_META]

    def wait(self) -> None:
        self._latest.wait_until_finished()
        if self._best is not None:
            self._best.wait_until_finished()

    def close(self) -> None:
        self._latest.close()
        if self._best is not None:
            self._best.close()


def checkpoint_folder(workdir: str, which: str = "latest") -> str:
    """Where `which` ('latest', 'best' or a step) lives: `best/` or `checkpoints/` of a run,
    or `workdir` itself when it is a folder of checkpoints."""
    root = paths.resolve(workdir)
    folder = f"{root}/{'best' if which == 'best' else 'checkpoints'}"
    return folder if paths.path(folder).is_dir() else root


@contextlib.contextmanager
def _read_only(workdir: str, which: str):
    """A read-only manager on `which`'s folder and the step it resolves to, or a clear error."""
    folder = checkpoint_folder(workdir, which)
    manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        step = manager.latest_step() if which in ("latest", "best") else int(which)
        if step is None or step not in manager.all_steps():
            raise FileNotFoundError(
                f"--workdir {workdir}: no checkpoint {'' if which in ('latest', 'best') else str(which) + ' '}in {folder} "
                f"(steps there: {sorted(manager.all_steps()) or 'none'}). Train first (`ffjax train --workdir "
                f"{workdir}`) or pass the right --checkpoint."
            )
        yield manager, folder, int(step)
    finally:
        manager.close()


def read_meta(workdir: str, which: str = "latest") -> tuple[dict, int, str]:
    """The JSON record saved beside a checkpoint, without touching its arrays.

    Returns:
      (meta, step, folder).
    """
    with _read_only(workdir, which) as (manager, folder, step):
        try:
            meta = manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
        except (KeyError, ValueError, FileNotFoundError) as e:
            raise ValueError(f"{folder}/{step}: this checkpoint has no readable meta record ({e}); it was not written by ffjax.") from e
    return dict(meta or {}), step, folder


def _shape_mismatch(state_dir: str, abstract_state: Any) -> str | None:
    """Why the arrays saved in `state_dir` cannot fill `abstract_state`, or None if they can.

    Compares the sorted lists of array shapes from the checkpoint's metadata, before any
    restore: a failed restore leaves orbax's reader coroutines behind, and shapes alone
    tell another model or another width apart. A dict target compares only the saved
    subtrees it names. None also when the metadata is unreadable (then the restore itself
    reports).
    """
    try:
        saved = ocp.StandardCheckpointHandler().metadata(paths.path(state_dir))
    except Exception:  # noqa: BLE001 (an unreadable metadata file: the restore reports it)
        return None
    saved = getattr(saved, "tree", saved)
    if isinstance(abstract_state, dict) and isinstance(saved, dict):
        missing = sorted(set(abstract_state) - set(saved))
        if missing:
            return f"it holds no {missing} (it has {sorted(saved)})"
        saved = {k: saved[k] for k in abstract_state}
    saved_shapes = sorted(tuple(leaf.shape) for leaf in jax.tree.leaves(saved))
    wanted = sorted(tuple(leaf.shape) for leaf in jax.tree.leaves(abstract_state))
    if saved_shapes == wanted:
        return None
    if len(saved_shapes) != len(wanted):
        return f"it holds {len(saved_shapes)} arrays, this model has {len(wanted)}"
    first = next(i for i, (a, b) in enumerate(zip(saved_shapes, wanted)) if a != b)
    return f"array shapes differ, e.g. {saved_shapes[first]} saved vs {wanted[first]} here"


def restore_model_state(workdir_or_path: str, target: dict, *, which: str = "latest") -> tuple[dict, dict, int]:
    """Restores only the model's arrays of a checkpoint (`ffjax.state.MODEL_KEYS`: parameters
    and BatchNorm statistics) for evaluation or prediction: the optimizer state, step, RNG and
    data position stay on disk, unread.

    Args:
      workdir_or_path: a training workdir (then `which` picks `latest` from checkpoints/ or
        `best` from best/) or a directory of checkpoints.
      target: `{'params': ..., 'rest': ...}` of `jax.ShapeDtypeStruct`s with shardings
        (`ffjax.state.abstract_model_state`).
      which: 'latest', 'best', or a step number as a string.

    Returns:
      ({'params': ..., 'rest': ...}, meta, step).
    """
    with _read_only(workdir_or_path, which) as (manager, folder, step):
        mismatch = _shape_mismatch(f"{folder}/{step}/{_STATE}", target)
        if mismatch:
            raise ValueError(
                f"Checkpoint {folder}/{step} does not fit the model of this config (another model or size?): {mismatch}"
            )
        restore_args = jax.tree.map(
            lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding, global_shape=s.shape, dtype=s.dtype), target
        )
        state_args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(**{_STATE: state_args, _META: ocp.args.JsonRestore()}))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"Checkpoint {folder}/{step} does not fit the model of this config (another model or size?): {e}"
            ) from e
    return dict(restored[_STATE]), restored[_META], step
