r"""A plain U-Net (Ronneberger et al. 2015) at paper scale, from scratch, 256 px.

Run:
  ffjax train --config configs/unet.py --workdir /tmp/ffjax/unet
"""

import pathlib
import runpy

# Loaded by path, so the configs work from any working directory.
default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config():
    config = default["base_config"]()
    config.model = "unet"
    config.model_kwargs.depth = 4            # 2x downsamplings
    config.model_kwargs.base_width = 64      # channels at full resolution
    return config.lock()
