"""Tests of ffjax.cluster: which jobs start jax.distributed, and the loud process-count mismatch."""

import jax
import ml_collections
import pytest

from ffjax import cluster

SLURM = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4", "SLURM_PROCID": "1"}
OPEN_MPI = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0", "OMPI_MCA_orte_hnp_uri": "1.2@tcp://x"}
GKE_TPU = {"TPU_WORKER_HOSTNAMES": "w-0,w-1,w-2,w-3", "TPU_WORKER_ID": "2", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
TPU_VM_SINGLE = {"TPU_ACCELERATOR_TYPE": "v5litepod-8"}
TPU_VM_MULTI = {"TPU_ACCELERATOR_TYPE": "v4-32"}  # the host count is the metadata server's


@pytest.fixture
def fake_jax(monkeypatch):
    """jax.distributed as a recorder; `state["processes"]` is what JAX then reports."""
    state = {"calls": [], "processes": 1, "fail": None}

    def initialize(**kwargs):
        if state["fail"]:
            raise state["fail"]
        state["calls"].append(kwargs)

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax, "process_count", lambda: state["processes"])
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    monkeypatch.setattr(cluster, "_libtpu_installed", lambda: False)  # this machine: no TPU
    return state


@pytest.mark.parametrize(
    "env, kind, processes",
    [
        (SLURM, "slurm", 4),
        (OPEN_MPI, "open_mpi", 2),
        (GKE_TPU, "gke_tpu", 4),
        (TPU_VM_MULTI, "cloud_tpu", 4),
        (TPU_VM_SINGLE, "cloud_tpu", 1),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234", "JAX_NUM_PROCESSES": "2"}, "jax_env", 2),
    ],
)
def test_multi_process_jobs_start_jax_distributed(fake_jax, env, kind, processes):
    fake_jax["processes"] = processes
    found = cluster.initialize(None, env)
    assert found.kind == kind
    assert fake_jax["calls"] == [{}]  # JAX's own detection finds the coordinator


@pytest.mark.parametrize("env", [{}, {"SLURM_JOB_ID": "5", "SLURM_NTASKS": "1"}, {"OMPI_COMM_WORLD_SIZE": "1"}])
def test_single_process_runs_start_nothing(fake_jax, env):
    assert cluster.initialize(None, env).num_processes == 1
    assert fake_jax["calls"] == []


def test_explicit_config_wins(fake_jax):
    config = ml_collections.ConfigDict({"distributed": {
        "coordinator_address": "127.0.0.1:9", "num_processes": 2, "process_id": 1, "cpu_collectives": ""}})
    fake_jax["processes"] = 2
    assert cluster.initialize(config, SLURM).kind == "config"
    assert fake_jax["calls"] == [{"coordinator_address": "127.0.0.1:9", "num_processes": 2, "process_id": 1}]


def test_a_job_of_several_processes_that_sees_one_stops_with_a_message(fake_jax):
    fake_jax["processes"] = 1
    with pytest.raises(RuntimeError, match="slurm job announces 4 processes .*SLURM_NTASKS.* JAX sees 1"):
        cluster.initialize(None, SLURM)
    fake_jax["fail"] = ValueError("coordinator unreachable")
    with pytest.raises(RuntimeError, match="gke_tpu job of 4 processes .*coordinator unreachable"):
        cluster.initialize(None, GKE_TPU)


def test_libtpu_on_a_machine_that_is_no_tpu_vm_runs_as_one_process(fake_jax, monkeypatch):
    monkeypatch.setattr(cluster, "_libtpu_installed", lambda: True)
    fake_jax["fail"] = ValueError("not on a TPU VM")
    assert cluster.initialize(None, {}).kind == "cloud_tpu"
