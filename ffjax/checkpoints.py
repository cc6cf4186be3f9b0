"""Checkpoints: the latest N for resuming, and the best one by a validation metric.

Each checkpoint holds the train state (model, optimizer, step, RNG) and a JSON record of the
config, the data fingerprint and the data position, so a run can be resumed exactly and
audited later. The data position is global (the next global batch: the input order is defined
over the whole split, see `pipeline.train_dataset`), not one iterator file per process, so a
checkpoint resumes on any process count and any device count that divides the global batch.

Integrity: once a step is fully written, process 0 records a checksum of every file in it
(`ffjax_checksums.json`). A resume checks them and falls back to the newest intact step,
moving a corrupt one aside to `checkpoints_corrupt/` (never deleting it) with a warning that
names it; evaluation names corruption as corruption.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
from typing import Any

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from ffjax import paths

_STATE, _META = "state", "meta"
CHECKSUMS = "ffjax_checksums.json"


class CorruptCheckpoint(ValueError):
    """A checkpoint's files do not match what was written (or do not restore)."""


def _first_line(e: Exception) -> str:
    """`Type: first line` of an exception (TensorStore's run to hundreds of lines)."""
    text = str(e)
    return f"{type(e).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _digest(path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(step_dir) -> dict[str, Any]:
    """Every file under `step_dir` by relative name (epath has no recursive glob on GCS)."""
    out, folders = {}, [step_dir]
    while folders:
        for p in folders.pop().iterdir():
            if p.is_dir():
                folders.append(p)
            elif p.name != CHECKSUMS:
                out[str(p.relative_to(step_dir))] = p
    return out


def write_checksums(step_dir) -> None:
    """Records a checksum of every file of a finished checkpoint step (process 0 only)."""
    if jax.process_index() != 0:
        return
    step_dir = paths.path(step_dir)
    sums = {name: _digest(p) for name, p in sorted(_files(step_dir).items())}
    (step_dir / CHECKSUMS).write_text(json.dumps(sums, indent=0))


def verify_checksums(step_dir) -> str | None:
    """What is wrong with a checkpoint step's files, or None (also when it has no checksums:
    a step written before they existed, or killed before they were)."""
    step_dir = paths.path(step_dir)
    record = step_dir / CHECKSUMS
    if not record.exists():
        return None
    try:
        sums = json.loads(record.read_text())
    except ValueError:
        return f"{record} is unreadable"
    files = _files(step_dir)
    for name, digest in sums.items():
        if name not in files:
            return f"{step_dir / name} is missing"
        if _digest(files[name]) != digest:
            return f"{step_dir / name} differs from what was written (checksum)"
    return None


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
        self._unsealed: list[tuple[Any, int]] = []  # (manager, step) saved, not yet checksummed
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
        self._seal()
        if self._latest.save(step, args=ocp.args.Composite(**args), force=True):
            self._unsealed.append((self._latest, step))
        else:
            logging.info("Checkpoint for step %d already exists; not overwritten.", step)

    def _seal(self) -> None:
        """Checksums the steps saved since the last call, once they are fully written.

        Called before the next save: orbax finishes one save before starting another anyway,
        so waiting here costs nothing more.
        """
        for manager, step in self._unsealed:
            manager.wait_until_finished()
            step_dir = f"{manager.directory}/{step}"
            if paths.path(step_dir).exists():  # not already removed by max_to_keep
                write_checksums(step_dir)
        self._unsealed = []

    def save_best(self, step: int, state: Any, metrics: dict, meta: dict) -> None:
        """Offers `state` to the best-by-metric manager; it keeps it only if it is the best."""
        if self._best is None:
            return
        flat = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self._seal()
        if self._best.save(
            step,
            args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(meta)}),
            metrics=flat,
            force=True,
        ):
            self._unsealed.append((self._best, step))

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
        """Restores the newest intact checkpoint into `abstract_state`'s types and shardings.

        A step whose files fail their checksums or do not restore is moved aside to
        `checkpoints_corrupt/` with a warning naming it, and the next older one is tried.

        Returns:
          (state, meta), or None when the workdir holds no checkpoint yet.

        Raises:
          ValueError: the checkpoint holds another model (a changed config), naming it.
          CorruptCheckpoint: every checkpoint there is corrupt.
        """
        args = {_STATE: ocp.args.StandardRestore(abstract_state), _META: ocp.args.JsonRestore()}
        steps = sorted(self._latest.all_steps(), reverse=True)
        if not steps:
            return None
        bad = []
        for step in steps:
            step_dir = f"{self._latest.directory}/{step}"
            mismatch = _shape_mismatch(f"{step_dir}/{_STATE}", abstract_state)
            if mismatch:
                raise ValueError(
                    f"{step_dir} does not fit the model of this config ({mismatch}): the model settings changed "
                    "since it was saved. Resume with the config it was trained with, or use another --workdir."
                )
            problem = verify_checksums(step_dir)
            if problem is None:
                try:
                    restored = self._latest.restore(step, args=ocp.args.Composite(**args))
                    if bad:
                        logging.warning("Resumed from step %d, the newest intact checkpoint.", step)
                    return restored[_STATE], restored[_META]
                except Exception as e:  # noqa: BLE001 - whatever the reader raises, the files are bad
                    problem = f"it does not restore: {_first_line(e)}"
            bad.append(self._quarantine(step, problem))
        raise CorruptCheckpoint(f"Every checkpoint in {self.workdir}/checkpoints is corrupt; moved aside: {bad}.")

    def _quarantine(self, step: int, problem: str) -> str:
        """Moves a corrupt step out of the manager's folder (kept for inspection)."""
        target = paths.path(f"{self.workdir}/checkpoints_corrupt/{step}_{time.strftime('%Y%m%dT%H%M%S')}")
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            paths.path(f"{self._latest.directory}/{step}").rename(target)
        logging.warning("Checkpoint step %d is corrupt (%s); moved to %s, falling back to an older step.", step, problem, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("ffjax_checkpoint_quarantine")
        self._latest.reload()
        return str(target)

    def wait(self) -> None:
        self._latest.wait_until_finished()
        if self._best is not None:
            self._best.wait_until_finished()
        self._seal()

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
        problem = verify_checksums(f"{folder}/{step}")
        if problem:
            raise CorruptCheckpoint(
                f"Checkpoint {folder}/{step} is corrupt: {problem}. Pick an older step with --checkpoint "
                f"(steps there: {sorted(manager.all_steps())})."
            )
        try:
            restored = manager.restore(step, args=ocp.args.Composite(**{_STATE: state_args, _META: ocp.args.JsonRestore()}))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"Checkpoint {folder}/{step} does not fit the model of this config (another model or size?): {e}"
            ) from e
        except Exception as e:  # noqa: BLE001 - shapes fit (checked above): the files are bad
            raise CorruptCheckpoint(
                f"Checkpoint {folder}/{step} is corrupt: it does not restore ({_first_line(e)}). "
                "Pick an older step with --checkpoint."
            ) from e
    return dict(restored[_STATE]), restored[_META], step
