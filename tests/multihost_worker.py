"""One process of the multi-host test (run by tests/multihost_test.py, not collected).

usage: multihost_worker.py DATA_DIR CONFIG_NAME WORKDIR OUT_NPZ NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES
"""

import os
import sys

data_dir, config_name, workdir, out, num_processes, process_id, port, local_devices = sys.argv[1:]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from ffjax import checkpoints, evaluation, sharding, state, train  # noqa: E402
from tests.helpers import load_config  # noqa: E402

jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))

config = load_config("test")
with config.unlocked():
    config.dataset.data_dir = data_dir
    config.dataset.config_name = config_name
    config.num_train_steps = 3
    config.checkpoint_every_steps = 3
    config.eval_every_steps = 3
    config.batch_size = 8
    config.eval_batch_size = 8
    if int(num_processes) > 1:
        config.distributed.coordinator_address = f"127.0.0.1:{port}"
        config.distributed.num_processes = int(num_processes)
        config.distributed.process_id = int(process_id)
        config.distributed.cpu_collectives = "gloo"

results = train.train_and_evaluate(config, workdir)
mesh = sharding.make_mesh()
_, target, _ = state.abstract_model_state(config, mesh)
restored, _, step = checkpoints.restore_model_state(workdir, target)
leaves = jax.tree.leaves(sharding.to_host(restored["params"]))
np.savez(out, step=step, devices=jax.device_count(), processes=jax.process_count(),
         auc=evaluation.headline(results).get("frame/auc", np.nan),
         **{f"p{i}": np.asarray(x) for i, x in enumerate(leaves)})
print(f"process {jax.process_index()}/{jax.process_count()} done at step {step}")
