"""Does the input show in the step time? The training step fed by the real pipeline against the
same step on one device-resident batch.

`ffjax bench --config C --fed_step` compiles the config's training step (device augmentation
included) and runs it in rounds that alternate two feeds, in the training loop's own order
(next batch from the reader, copy onto the mesh, dispatch, then wait for the previous step):

- `resident`: one batch already on the devices, reused every step: the step alone;
- `fed`: batches from `pipeline.train_dataset` with its grain workers, as `ffjax train` reads.

Alternating rounds and taking the median per feed keeps a shared machine's slow minutes from
landing on one side only. `slowdown` = fed / resident - 1: 0 means the input never shows.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any, Callable

import jax

from ffjax import optim, sharding, state as state_lib, train
from ffjax.data import pipeline


def _run(step_fn: Any, state: Any, next_batch: Callable[[], dict], steps: int) -> tuple[Any, float]:
    """`steps` steps as the training loop runs them; (state, seconds per step)."""
    pending = None
    tick = time.perf_counter()
    for _ in range(steps):
        state, metrics = step_fn(state, next_batch())
        if pending is not None:
            jax.block_until_ready(pending)  # the loop reads the previous step's loss
        pending = metrics["loss"]
    jax.block_until_ready(pending)
    return state, (time.perf_counter() - tick) / steps


def measure_fed_step(config: Any, *, batch: int, mesh: jax.sharding.Mesh, steps: int = 4, rounds: int = 3) -> dict[str, Any]:
    """Seconds per training step, resident vs fed, and the slowdown.

    Args:
      config: the run config (model, dataset, augmentation, `dataset.num_workers`).
      batch: global batch size.
      mesh: the devices the step runs on.
      steps: steps per round and feed.
      rounds: rounds of (resident, fed).

    Returns:
      {'resident_s_per_step', 'fed_s_per_step', 'slowdown', 'rounds': [...], 'image_size', ...}.
    """
    cfg = copy.deepcopy(config)
    cfg.batch_size = batch
    sharding.check_batch_size(batch, mesh, "--batch_sizes")
    split = pipeline.open_split(cfg.dataset, cfg.dataset.train_split)
    reader = iter(pipeline.train_dataset(split, cfg, batch))
    try:
        resident = sharding.global_batch(next(reader), mesh)
        tx = optim.make_optimizer(cfg)
        graphdef, state = state_lib.create_train_state(cfg, mesh, tx)
        step_fn = train.compile_train_step(cfg, mesh, graphdef, tx)
        state, _ = _run(step_fn, state, lambda: resident, 2)  # compile and warm up
        fed = lambda: sharding.global_batch(next(reader), mesh)  # noqa: E731
        state, _ = _run(step_fn, state, fed, 1)  # the workers' queues fill
        measured = []
        for _ in range(rounds):
            state, resident_s = _run(step_fn, state, lambda: resident, steps)
            state, fed_s = _run(step_fn, state, fed, steps)
            measured.append({"resident_s_per_step": round(resident_s, 4), "fed_s_per_step": round(fed_s, 4)})
    finally:
        reader.close()
    resident_s = statistics.median(r["resident_s_per_step"] for r in measured)
    fed_s = statistics.median(r["fed_s_per_step"] for r in measured)
    return {
        "model": cfg.model,
        "image_size": int(resident["image"].shape[1]),
        "batch": batch,
        "devices": int(mesh.devices.size),
        "num_workers": int(cfg.dataset.num_workers),
        "steps_per_round": steps,
        "rounds": measured,
        "resident_s_per_step": round(resident_s, 4),
        "fed_s_per_step": round(fed_s, 4),
        "slowdown": round(fed_s / resident_s - 1.0, 4),
    }


def table(result: dict) -> str:
    return "\n".join([
        f"Training step, {result['model']} at {result['image_size']} px, batch {result['batch']} on "
        f"{result['devices']} device(s), {result['num_workers']} grain worker(s); median of {len(result['rounds'])} rounds "
        f"x {result['steps_per_round']} steps:",
        f"  device-resident batch: {result['resident_s_per_step']:.3f} s/step",
        f"  fed by the pipeline:   {result['fed_s_per_step']:.3f} s/step  ({100 * result['slowdown']:+.1f} %)",
    ])
