r"""A plain U-Net (Ronneberger et al. 2015) at paper scale, from scratch, 256 px.

Run:
  ffjax train --config unet --workdir /tmp/ffjax/unet
"""

from ffjax.configs import default


def get_config():
    config = default.base_config()
    config.model = "unet"
    config.model_kwargs.depth = 4            # 2x downsamplings
    config.model_kwargs.base_width = 64      # channels at full resolution
    return config.lock()
