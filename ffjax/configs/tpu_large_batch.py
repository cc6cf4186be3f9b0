r"""Large-batch data-parallel training on a TPU pod slice (or a multi-GPU node): bf16, LAMB.

Global batch 1024 over every chip of every host; the learning rate follows the linear scaling
rule from base_batch_size, with a longer warmup. `jax.distributed` starts from the TPU
environment on each host; run the same command on every host.

Run (on every host of the slice):
  ffjax train --config tpu_large_batch --workdir gs://bucket/ffjax/large_batch
"""

from ffjax.configs import default


def get_config():
    config = default.base_config()
    config.batch_size = 1024                 # global; must divide by the chip count
    config.eval_batch_size = 1024
    config.dtype = "bfloat16"                # MXU-native compute, fp32 parameters
    config.optimizer = "lamb"                # layer-wise trust ratio for large batches
    config.learning_rate = 2e-4              # at base_batch_size=32, scaled ×32 here
    config.warmup_steps = 1_000
    config.num_train_steps = 5_000
    config.dataset.num_workers = 8
    return config.lock()
