"""One process of the multi-host test (run by tests/multihost_test.py, not collected).

usage: multihost_worker.py DATA_DIR CONFIG_NAME WORKDIR OUT_NPZ NUM_PROCESSES PROCESS_ID PORT LOCAL_DEVICES
                           [NUM_STEPS [SIGTERM_AT]]

SIGTERM_AT > 0: this process sends itself SIGTERM while it reads that batch (a preempted host);
it then exits with `ffjax train`'s status for a stopped run (143) after the checkpoint.
SIGTERM_AT < 0: this process fails (a corrupt record) while it reads batch -SIGTERM_AT; it
exits as `ffjax train` does (status 1), and so must the other processes, promptly.
"""

import os
import signal
import sys

data_dir, config_name, workdir, out, num_processes, process_id, port, local_devices = sys.argv[1:9]
num_steps = int(sys.argv[9]) if len(sys.argv) > 9 else 3
sigterm_at = int(sys.argv[10]) if len(sys.argv) > 10 else 0
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from ffjax import checkpoints, evaluation, failure_watch, sharding, state, train  # noqa: E402
from tests import compilation_cache  # noqa: E402
from tests.helpers import load_config  # noqa: E402

compilation_cache.enable()

config = load_config("test")
with config.unlocked():
    config.dataset.data_dir = data_dir
    config.dataset.config_name = config_name
    config.num_train_steps = num_steps
    config.checkpoint_every_steps = 3
    config.eval_every_steps = 3 if num_steps == 3 else 0
    config.batch_size = 8
    config.eval_batch_size = 8
    if int(num_processes) > 1:
        config.distributed.coordinator_address = f"127.0.0.1:{port}"
        config.distributed.num_processes = int(num_processes)
        config.distributed.process_id = int(process_id)
        config.distributed.cpu_collectives = "gloo"

if sigterm_at:
    real_global_batch, calls = sharding.global_batch, []

    def preempting_global_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == sigterm_at:
            signal.raise_signal(signal.SIGTERM)
        if len(calls) == -sigterm_at:
            raise OSError(f"corrupt record in shard {process_id} (injected by the test)")
        return real_global_batch(*args, **kwargs)

    train.sharding.global_batch = preempting_global_batch
try:
    results = train.train_and_evaluate(config, workdir)
except train.Preempted as e:
    np.savez(out, step=e.step)
    print(f"process {jax.process_index()} stopped at step {e.step}")
    sys.exit(train.PREEMPTED_EXIT_CODE)
except Exception as e:
    failure_watch.exit_after_failure(e)  # as `ffjax train` does
    raise
mesh = sharding.make_mesh()
_, target, _ = state.abstract_model_state(config, mesh)
restored, _, step = checkpoints.restore_model_state(workdir, target)
leaves = jax.tree.leaves(sharding.to_host(restored["params"]))
np.savez(out, step=step, devices=jax.device_count(), processes=jax.process_count(),
         auc=evaluation.headline(results).get("frame/auc", np.nan) if results else np.nan,
         **{f"p{i}": np.asarray(x) for i, x in enumerate(leaves)})
print(f"process {jax.process_index()}/{jax.process_count()} done at step {step}")
