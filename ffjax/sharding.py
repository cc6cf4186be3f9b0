"""The device mesh, and how batches and state are placed on it.

One mesh with a single `data` axis spans every device of every process. Batches are sharded
along it, parameters and optimizer state are replicated: plain data parallelism written as
`jax.jit` over a mesh (the successor of `pmap`), which runs unchanged on one CPU, eight GPUs
or a multi-host TPU slice.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first `num_devices` devices (default: all devices of all processes).

    Auto axis types: parameters and batches are placed explicitly by `jit`'s shardings, and
    Auto keeps XLA free to propagate the rest (with Explicit axes, jax.make_mesh's default,
    parameters left on one device next to mesh-sharded inputs raise ShardingTypeError).
    """
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ValueError(f"num_devices={num_devices}, but {len(devices)} devices are visible.")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the `data` axis, every other axis whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, setting: str = "config.batch_size") -> int:
    """Returns the per-process batch size, or fails naming the setting to fix.

    Args:
      batch_size: global batch size (all devices of all processes).
      mesh: the mesh the batch is sharded over.
      setting: the config field the number came from, for the error message.
    """
    n = mesh.devices.size
    if batch_size <= 0 or batch_size % n:
        raise ValueError(
            f"{setting}={batch_size} must be a positive multiple of the device count ({n}): "
            f"every device takes an equal slice of the global batch. Try {setting}="
            f"{max(n, (batch_size // n) * n or n)}."
        )
    return batch_size // jax.process_count()


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Turns this process's slice of a batch into global arrays sharded over `data`.

    Each process passes only the rows it read; `make_array_from_process_local_data` stitches
    them into one global array without any host ever holding the whole batch.
    """
    sharding = data_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def to_host(tree: Any) -> Any:
    """Fetches arrays to numpy on every process, gathering shards other processes hold."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a batch-sharded array, in the order it fed them in."""
    if x.is_fully_addressable:
        return np.asarray(x)
    shards = {s.index[0].start or 0: s for s in x.addressable_shards}
    return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)])


def allgather_json(records: list) -> list:
    """Concatenates every process's JSON-able list (variable length, strings allowed), in
    process order, on every process."""
    blob = np.frombuffer(json.dumps(records).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([blob.size], np.int64))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: blob.size] = blob
    everyone = multihost_utils.process_allgather(padded)
    merged = []
    for row, size in zip(np.asarray(everyone), np.asarray(sizes).reshape(-1)):
        merged.extend(json.loads(bytes(row[: int(size)]).decode()))
    return merged
