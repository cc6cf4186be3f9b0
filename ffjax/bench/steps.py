"""Timing of the project's compiled train and eval steps on synthetic, device-resident batches.

The batch is put on the mesh once before timing, so the numbers measure compute and the
step's own dispatch, not the input pipeline (`ffjax.bench.input` measures that separately).
Each step is compiled ahead of time (`.lower().compile()`): the timed loop can never trigger
a recompile, and the same compiled object gives XLA's FLOP count for the step.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ffjax import optim, sharding, state as state_lib, tasks, train
from ffjax.data import augment
from ffjax.bench import profile
from ffjax.platform import selection
from ffjax.platform.cpu import kernels

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}
MODES = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured configuration: a row of the results table."""

    mode: str          # 'train' or 'eval'
    devices: int       # mesh size (the first `devices` local devices)
    batch: int         # global batch size
    precision: str     # 'fp32' or 'bf16' (computation dtype; parameters stay fp32)
    image_size: int    # square input side in pixels


def case_config(config: Any, case: Case) -> Any:
    """A copy of `config` with the case's batch size and precision filled in."""
    if case.precision not in PRECISIONS:
        raise ValueError(f"--precisions: {case.precision!r} is not one of {sorted(PRECISIONS)}.")
    cfg = copy.deepcopy(config)
    cfg.batch_size = case.batch
    cfg.eval_batch_size = case.batch
    cfg.dtype = PRECISIONS[case.precision]
    cfg.param_dtype = "float32"
    return cfg


def synthetic_batch(batch: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A host batch in the architecture's contract: random pixels, random binary mask/label.

    Random masks and labels are what the PyTorch reference trains on, so both sides run the
    same loss on the same kind of targets.
    """
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "mask": (rng.random((batch, size, size)) > 0.5).astype(np.uint8),
        "label": rng.integers(0, 2, (batch,), dtype=np.int32),
        "valid": np.ones((batch,), bool),
        "method_id": np.zeros((batch,), np.int32),
        "compression_id": np.ones((batch,), np.int32),
        "position": augment.positions(0, batch),  # keys the step's device augmentation
    }


def _cost(compiled: Any) -> dict[str, float]:
    cost = compiled.cost_analysis()
    # Older JAX returned one dict per device program.
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    cost = dict(cost or {})
    # XLA does not count what runs inside custom calls: add the native kernel gradients'.
    native = kernels.flops_in_hlo(compiled.as_text())
    if native and cost.get("flops"):
        cost["flops"] = float(cost["flops"]) + native
    return cost


def _temp_bytes(compiled: Any) -> int | None:
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except (AttributeError, NotImplementedError, TypeError):
        return None


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _build(cfg: Any, mode: str, mesh: jax.sharding.Mesh, batch: dict[str, jax.Array]):
    """(compiled step, first argument, params count, compile seconds) for one mode."""
    tick = time.perf_counter()
    if mode == "train":
        tx = optim.make_optimizer(cfg)
        graphdef, state = state_lib.create_train_state(cfg, mesh, tx)
        params = state_lib.count_params(state.params)
        jitted = train.compile_train_step(cfg, mesh, graphdef, tx)
    elif mode == "eval":
        ops = state_lib.model_ops(cfg, mesh)
        graphdef, abstract_params, _ = nnx.split(nnx.eval_shape(lambda: state_lib.build_model(cfg, ops)), nnx.Param, ...)
        state = jax.jit(
            lambda: tuple(nnx.split(state_lib.build_model(cfg, ops), nnx.Param, ...)[1:]),
            out_shardings=sharding.replicated(mesh),
        )()
        params = state_lib.count_params(abstract_params)
        task = tasks.from_config(cfg)
        logits_fn = state_lib.predict_fn(graphdef, task)
        # Model forward (inference mode) and the frame score, as the evaluator runs them.
        jitted = jax.jit(
            lambda state, batch: task.frame_score(logits_fn(state, batch["image"])),
            in_shardings=(sharding.replicated(mesh), sharding.data_sharded(mesh)),
            out_shardings=sharding.data_sharded(mesh), compiler_options=selection.compiler_options(mesh.devices.flat),
        )
    else:
        raise ValueError(f"--modes: {mode!r} is not one of {MODES}.")
    compiled = jitted.lower(state, batch).compile()
    return compiled, state, params, time.perf_counter() - tick


def device_memory() -> tuple[int | None, int | None]:
    """(bytes the first local device may use, its peak bytes in use so far); None where the
    platform reports no memory statistics (CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit"), stats.get("peak_bytes_in_use")


def _step_bytes(config: Any, case: Case) -> int:
    """Device bytes one compiled step needs (arguments + outputs + temporaries, per device)."""
    cfg = case_config(config, case)
    mesh = sharding.make_mesh(case.devices)
    host = synthetic_batch(case.batch // jax.process_count(), case.image_size)
    batch = sharding.global_batch(host, mesh)
    compiled = _build(cfg, case.mode, mesh, batch)[0]
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def fit_batch(config: Any, case: Case, *, fraction: float = 0.7, max_per_device: int = 1024) -> tuple[int, str]:
    """The largest power-of-two global batch whose step fits in `fraction` of device memory.

    Compiles (does not run) the step at 8 and 16 examples per device, fits memory as fixed +
    per-example bytes, picks the power of two under the budget and checks it by compiling it
    (halving while it does not fit).

    Args:
      config: the run config.
      case: the case to fit; its batch is replaced.
      fraction: share of the device's `bytes_limit` the step may use.
      max_per_device: upper bound on examples per device.

    Returns:
      (global batch, how it was chosen). On a platform without memory statistics (CPU) the
      case's own batch is returned.
    """
    limit, _ = device_memory()
    if not limit:
        return case.batch, "the suite's batch (this platform reports no device memory limit)"
    budget = fraction * limit
    at = lambda per: _step_bytes(config, dataclasses.replace(case, batch=per * case.devices))  # noqa: E731
    small, large = at(8), at(16)
    per_example = max(1.0, (large - small) / 8)
    fixed = small - 8 * per_example
    per = 8
    while per * 2 <= max_per_device and fixed + per * 2 * per_example <= budget:
        per *= 2
    while per > 1 and at(per) > budget:
        per //= 2
    return per * case.devices, (f"fills {fraction:.0%} of {limit / 2**30:.1f} GiB: ~{per_example / 2**20:.1f} MiB per "
                                f"example + {max(fixed, 0) / 2**20:.0f} MiB")


def measure(
    config: Any, case: Case, *, warmup: int = 2, iters: int = 5, seed: int = 0, profile_steps: int = 0, trace_dir: str = "",
    stop_flag: bool = False,
) -> dict[str, Any]:
    """Compiles and times one case of the project's own train or eval step.

    Args:
      config: a run config (`ffjax.configs`; model, loss, optimizer are read from it).
      case: what to measure; the config's batch size and dtype are replaced by the case's.
      warmup: untimed steps after compiling (first-run allocations, caches).
      iters: timed steps; the median is reported.
      seed: seed of the synthetic batch.
      profile_steps: when > 0, that many more steps run under the JAX profiler and the row
        gets a per-operation time summary (`ffjax.bench.profile`).
      trace_dir: where the profiler trace goes (required with profile_steps).
      stop_flag: train steps get the multi-process run's per-row stop flag (`batch["stop"]`).

    Returns:
      One results row: the case, timings (ms/step median/min/max, images/s), compile time,
      XLA's FLOPs per step summed over devices, parameters, and the machine's load
      (`loadavg_*`, `cpu_util` = process CPU time / (wall time x cores)).
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"--iters={iters} must be >= 1 and --warmup={warmup} >= 0.")
    cfg = case_config(config, case)
    mesh = sharding.make_mesh(case.devices)
    sharding.check_batch_size(case.batch, mesh, "--batch_sizes")
    host = synthetic_batch(case.batch // jax.process_count(), case.image_size, seed)
    if stop_flag and case.mode == "train":
        host["stop"] = np.zeros((len(host["label"]),), np.int32)
    batch = jax.block_until_ready(sharding.global_batch(host, mesh))
    compiled, state, params, compile_s = _build(cfg, case.mode, mesh, batch)
    cost = _cost(compiled)

    def run_once(state):
        tick = time.perf_counter()
        if case.mode == "train":
            state, out = compiled(state, batch)
        else:
            out = compiled(state, batch)
        jax.block_until_ready((state, out))
        return state, time.perf_counter() - tick

    state, first_s = run_once(state)
    for _ in range(max(0, warmup - 1)):
        state, _ = run_once(state)
    load_before = os.getloadavg()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    times = []
    for _ in range(iters):
        state, seconds = run_once(state)
        times.append(seconds)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    load_after = os.getloadavg()
    summary = None
    if profile_steps > 0:
        if not trace_dir:
            raise ValueError("--profile_steps needs a trace folder (--trace_dir).")
        state = profile.trace_steps(lambda s: run_once(s)[0], state, profile_steps, trace_dir)
        summary = profile.summarize_trace(trace_dir, compiled.as_text(), profile_steps)
    jax.block_until_ready(state)

    median = statistics.median(times)
    # cost_analysis describes one device's partitioned program; every device runs one.
    flops_step = float(cost["flops"]) * case.devices if cost.get("flops") else None
    threads = _threads()
    return {
        **dataclasses.asdict(case),
        **({"stop_flag": True} if stop_flag and case.mode == "train" else {}),
        "model": cfg.model,
        "dtype": cfg.dtype,
        "params": params,
        "warmup": warmup,
        "iters": iters,
        "compile_s": round(compile_s, 3),
        "first_step_s": round(first_s, 3),
        "ms_step_median": round(median * 1e3, 3),
        "ms_step_min": round(min(times) * 1e3, 3),
        "ms_step_max": round(max(times) * 1e3, 3),
        "ms_steps": [round(t * 1e3, 3) for t in times],
        "images_per_s": round(case.batch / median, 4),
        "flops_per_step": flops_step,
        "gflops_per_image": round(flops_step / case.batch / 1e9, 4) if flops_step else None,
        "achieved_gflops_per_s": round(flops_step / median / 1e9, 3) if flops_step else None,
        "bytes_accessed_per_step": float(cost["bytes accessed"]) * case.devices if cost.get("bytes accessed") else None,
        "temp_bytes_per_device": _temp_bytes(compiled),
        "peak_device_bytes": device_memory()[1],
        "threads": threads,
        "cpu_util": round(cpu / (wall * threads), 3),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in load_after],
        **({"profile": summary} if summary is not None else {}),
    }


def matmul_gflops(size: int = 2048, iters: int = 5, dtype: str = "float32") -> float:
    """XLA's own square-matmul ceiling on the first device: GFLOP/s, best of `iters`.

    A reference for MFU on machines without a data-sheet peak (CPUs): what a jitted
    `size x size` matmul reaches here, the same way the PyTorch suite measures its ceiling.
    """
    device = jax.devices()[0]
    a = jax.device_put(jnp.ones((size, size), dtype), device)
    b = jax.device_put(jnp.ones((size, size), dtype), device)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    jax.block_until_ready(matmul(a, b))
    best = float("inf")
    for _ in range(iters):
        tick = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        best = min(best, time.perf_counter() - tick)
    return 2.0 * size**3 / best / 1e9
