r"""Tiny CPU config the tests share: a 2-level U-Net of width 4 on 32 px crops, a few steps.

Run (after building a tiny dataset into /tmp/ffjax_data):
  ffjax train --config test --workdir /tmp/ffjax/test \
      --config.dataset.data_dir=/tmp/ffjax_data
"""

from ffjax.configs import default


def get_config():
    config = default.base_config()
    config.dataset.config_name = "test"
    config.dataset.num_workers = 0           # no worker processes in tests (~6 s each)
    config.dataset.class_balance = True
    config.model = "unet"
    config.model_kwargs.depth = 2
    config.model_kwargs.base_width = 4
    config.augment.jpeg_prob = 0.5           # exercise every augmentation once in a while
    config.augment.blur_prob = 0.5
    config.batch_size = 8                    # one example per virtual device
    config.eval_batch_size = 16
    config.learning_rate = 3e-3
    config.warmup_steps = 2
    config.num_train_steps = 6
    config.log_every_steps = 2
    config.eval_every_steps = 6
    config.checkpoint_every_steps = 3
    config.keep_checkpoints = 2
    return config.lock()
