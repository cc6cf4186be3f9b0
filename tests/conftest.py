"""Test set-up shared by every test: 8 virtual CPU devices, set before JAX is imported."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TFDS probes for TensorFlow and GCS at import; neither is wanted here.
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")

import jax  # noqa: E402

from tests import compilation_cache  # noqa: E402

compilation_cache.enable()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_ffpp(tmp_path_factory):
    """A small FF++-shaped tree (5 official pairs, 4 methods, c23) written once per session, its
    frames large enough (160x120: faces ~50 px) for dlib to frame them (detector crops)."""
    from ffjax.testing import make_ffpp_tree

    root = tmp_path_factory.mktemp("ffpp")
    return make_ffpp_tree(root, num_frames=8, frame_size=(160, 120), seed=0)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_ffpp, tmp_path_factory):
    """(data_dir, config_name) of the tiny tree packaged by the real builder: 32 px, 4 frames."""
    from ffjax.build_data import build_dataset

    data_dir = tmp_path_factory.mktemp("tfds")
    builder = build_dataset(
        tiny_ffpp.root, data_dir, image_size=32, frames_per_video=4, num_workers=0, verbose=False
    )
    return str(data_dir), builder.builder_config.name
