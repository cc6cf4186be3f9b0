r"""The FF++ baseline: XceptionNet frame classifier, 299 px, Adam 2e-4 (Rössler et al. 2019).

The classification side of the paper's comparison: same data, same evaluator, a frame label
instead of a mask. Build the data at 299 px first (`ffjax build-data ... --image_size 299`).

Run:
  ffjax train --config xception_cls --workdir /tmp/ffjax/xception_cls
"""

from ffjax.configs import default


def get_config():
    config = default.base_config()
    config.dataset.config_name = "c23_size299"  # built with `ffjax build-data ... --image_size 299`
    config.model = "xception"
    config.model_kwargs.num_outputs = 1      # one logit: P(fake) = sigmoid
    config.model_kwargs.stem_padding = 0     # timm legacy_xception's stem: its ImageNet
                                             #   weights (init_from) give timm's outputs
    config.optimizer = "adamw"
    config.learning_rate = 2e-4              # FF++'s Adam lr
    config.weight_decay = 0.0                # plain Adam, as in FF++
    config.loss.dice_weight = 0.0            # (segmentation-only term)
    config.warmup_steps = 0
    config.schedule = "constant"
    return config.lock()
