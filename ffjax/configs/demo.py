r"""The demo: a small U-Net on 64 px face crops of generated FF++-style videos, on 2 CPU cores.

`make demo` / `ffjax demo` generates the videos, builds the dataset and fills in
`dataset.data_dir` and `dataset.config_name`. To train on that data by hand:
  ffjax train --config demo --workdir /tmp/ffjax_demo/run \
      --config.dataset.data_dir=/tmp/ffjax_demo/tfds --config.dataset.config_name=c23_frames6_size64

`--config demo:quick` is the CI-sized variant behind `ffjax demo --quick` (32 px, a few steps).
"""

from ffjax.configs import default


def get_config(variant: str | None = None):
    """Args: variant: None for the full demo, 'quick' for the CI-sized run."""
    if variant not in (None, "", "full", "quick"):
        raise ValueError(f"ffjax/configs/demo.py:{variant}: the variants are 'full' (default) and 'quick'.")
    config = default.base_config()
    config.dataset.data_dir = "/tmp/ffjax_demo/tfds"   # set by the demo to what it built
    config.dataset.config_name = "c23_frames6_size64"  # set by the demo to what it built
    config.dataset.num_workers = 0           # 2 cores: worker processes only add start-up time
    config.model = "unet"
    config.model_kwargs.depth = 3            # 64 px -> 8 px at the bottom
    config.model_kwargs.base_width = 8       # 8/16/32 channels: fast on CPU
    config.augment.jpeg_prob = 0.0           # the generated videos are c23 only: no need, and
    config.augment.blur_prob = 0.0           #   the demo stays as its README figures were measured
    config.batch_size = 16
    config.eval_batch_size = 64
    config.learning_rate = 3e-3              # small net, short run: a high rate (Adam)
    config.base_batch_size = 16
    config.warmup_steps = 20
    config.grad_clip_norm = 1.0
    config.num_train_steps = 300
    config.log_every_steps = 25              # the demo's progress display
    config.eval_every_steps = 300            # validate once, at the end (keeps workdir/best)
    config.checkpoint_every_steps = 300
    config.keep_checkpoints = 1
    if variant == "quick":
        config.dataset.config_name = "c23_frames3_size32"
        config.model_kwargs.depth = 2
        config.model_kwargs.base_width = 4
        config.batch_size = 8
        config.eval_batch_size = 16
        config.base_batch_size = 8
        config.warmup_steps = 2
        config.num_train_steps = 6
        config.log_every_steps = 2
        config.eval_every_steps = 6
        config.checkpoint_every_steps = 6
    return config.lock()
