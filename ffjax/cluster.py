"""Multi-process start-up: which cluster a process runs in, `jax.distributed`, a loud mismatch.

A pod or a GPU cluster runs one process per host. They must all call
`jax.distributed.initialize()` before touching a device, or each one trains alone on its own
devices (and orbax's multi-host barriers fail: "Distributed system is not available"). JAX
finds the coordinator itself on Cloud TPU (metadata server), GKE, SLURM and Open MPI; this
module decides when to ask it to, from the environment each of those sets, and checks the
result against what the environment says.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What the environment says about the job.

    Attributes:
      kind: `config`, `jax_env`, `slurm`, `open_mpi`, `gke_tpu`, `cloud_tpu` or `none`.
      num_processes: processes the environment announces, None where it does not say
        (a Cloud TPU VM: JAX asks the metadata server).
      evidence: the variables (or package) it was read from, for messages.
    """

    kind: str
    num_processes: int | None
    evidence: str


def _libtpu_installed() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def _int(env, key) -> int | None:
    try:
        return int(env[key])
    except (KeyError, ValueError):
        return None


def detect(config: Any = None, env=None) -> Cluster:
    """The cluster this process runs in, from the config and the environment.

    Args:
      config: the run config; its `distributed` block wins when it names a coordinator.
      env: the environment (default `os.environ`).

    Returns:
      The `Cluster`; kind `none` for a plain single-process run.
    """
    env = os.environ if env is None else env
    dist = getattr(config, "distributed", None) if config is not None else None
    if dist is not None and dist.get("coordinator_address"):
        return Cluster("config", int(dist.num_processes), "config.distributed.coordinator_address")
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return Cluster("jax_env", _int(env, "JAX_NUM_PROCESSES"), "JAX_COORDINATOR_ADDRESS")
    if "SLURM_JOB_ID" in env and "SLURM_NTASKS" in env:
        return Cluster("slurm", _int(env, "SLURM_NTASKS"), "SLURM_JOB_ID, SLURM_NTASKS")
    if "OMPI_COMM_WORLD_SIZE" in env:
        return Cluster("open_mpi", _int(env, "OMPI_COMM_WORLD_SIZE"), "OMPI_COMM_WORLD_SIZE")
    hosts = env.get("TPU_WORKER_HOSTNAMES", "")
    if hosts:
        # GKE's TPU node pools (and multi-host TPU VMs) list every worker of the slice.
        count = len([h for h in hosts.split(",") if h.strip()])
        return Cluster("gke_tpu", count, "TPU_WORKER_HOSTNAMES")
    if env.get("TPU_ACCELERATOR_TYPE") or _libtpu_installed():
        # A Cloud TPU VM: how many hosts the slice has is known to the metadata server only.
        return Cluster("cloud_tpu", None, "libtpu installed" if not env.get("TPU_ACCELERATOR_TYPE") else "TPU_ACCELERATOR_TYPE")
    return Cluster("none", 1, "no cluster variables")


def initialize(config: Any = None, env=None) -> Cluster:
    """Starts `jax.distributed` when the process runs in a multi-process job, then checks it.

    Explicit settings win (`config.distributed.coordinator_address`, `num_processes`,
    `process_id`, `cpu_collectives`). Otherwise, in a SLURM or Open MPI job of several tasks,
    a GKE TPU slice, on a Cloud TPU VM or with `JAX_COORDINATOR_ADDRESS`, JAX's own detection
    is called. A single-process run does nothing.

    Args:
      config: the run config; only its optional `distributed` block is read.
      env: the environment (default `os.environ`).

    Returns:
      The detected `Cluster`.

    Raises:
      RuntimeError: the job announces several processes but JAX sees another count (or
        could not start), naming the variables and what to check.
    """
    env = os.environ if env is None else env
    cluster = detect(config, env)
    if jax.distributed.is_initialized():
        _check(cluster)
        return cluster
    if cluster.kind == "config":
        dist = config.distributed
        if dist.get("cpu_collectives"):
            # CPU devices of several processes need a collectives backend for any reduction.
            jax.config.update("jax_cpu_collectives_implementation", dist.cpu_collectives)
        jax.distributed.initialize(
            coordinator_address=dist.coordinator_address,
            num_processes=int(dist.num_processes),
            process_id=int(dist.process_id),
        )
    elif cluster.kind == "cloud_tpu" or (cluster.num_processes or 0) > 1 or cluster.kind == "jax_env":
        try:
            jax.distributed.initialize()
        except Exception as e:  # noqa: BLE001 - re-raised with what to check, or tolerated below
            if cluster.kind == "cloud_tpu":
                # libtpu on a machine that is not a TPU VM (or one host of one): one process.
                logging.info("jax.distributed not started (%s): running as one process.", e)
                return cluster
            raise RuntimeError(
                f"This looks like a {cluster.kind} job of {cluster.num_processes} processes "
                f"({cluster.evidence}), but jax.distributed.initialize() failed: {e}. Check that "
                "every process was started and can reach process 0, or set "
                "config.distributed.coordinator_address/num_processes/process_id."
            ) from e
    else:
        return cluster
    logging.info("jax.distributed: process %d of %d (%s)", jax.process_index(), jax.process_count(), cluster.kind)
    _check(cluster)
    return cluster


def _check(cluster: Cluster) -> None:
    """Fails when JAX's process count differs from what the job announced."""
    if cluster.num_processes is not None and jax.process_count() != cluster.num_processes:
        raise RuntimeError(
            f"The {cluster.kind} job announces {cluster.num_processes} processes "
            f"({cluster.evidence}) but JAX sees {jax.process_count()}: each would train on its "
            "own. Start one process per host (srun/mpirun/gcloud --worker=all), or fix "
            "config.distributed.num_processes."
        )
