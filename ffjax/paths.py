"""Locations a user gives: a local path or a URL (`gs://bucket/run`), resolved one way.

A pod's hosts must share one checkpoint location, and on Cloud TPU that is a bucket: workdirs
(checkpoints, metrics.jsonl, TensorBoard, eval reports, the workdir lock) accept `gs://` URLs
through `etils.epath` (gcsfs underneath) and orbax (TensorStore's GCS driver). Local paths
work as before. Datasets, predict's inputs and outputs and the demo's folder are local.
"""

from __future__ import annotations

import importlib.util
import os

from etils import epath


def is_url(location) -> bool:
    """Whether `location` is a URL such as `gs://bucket/run` (not a local path)."""
    return "://" in str(location)


def resolve(location) -> str:
    """A URL unchanged (checked usable); a local path absolute, with `~` expanded."""
    location = str(location)
    if is_url(location):
        _check_url_support(location)
        return location.rstrip("/")
    return os.path.abspath(os.path.expanduser(location))


def path(location) -> epath.Path:
    """`location` (after `resolve`) as an `epath.Path`: pathlib's interface for both kinds."""
    return epath.Path(resolve(location))


def _check_url_support(location: str) -> None:
    scheme = location.split("://", 1)[0]
    if scheme == "gs" and importlib.util.find_spec("gcsfs") is None:
        raise ImportError(
            f"{location}: gs:// locations need gcsfs: pip install 'ffjax[gcs]' (or gcsfs)."
        )
    if scheme not in ("gs", "file"):
        raise ValueError(f"{location}: only local paths and gs:// URLs are supported.")
