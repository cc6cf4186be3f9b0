"""Locations a user gives: a local path or a URL (`gs://bucket/run`), resolved one way.

A pod's hosts must share one checkpoint location, and on Cloud TPU that is a bucket: workdirs
(checkpoints, metrics.jsonl, TensorBoard, eval reports, the workdir lock) accept `gs://` URLs
through `etils.epath` (gcsfs underneath) and orbax (TensorStore's GCS driver). Outputs written
by libraries that need a local file (OpenCV's video writer: predict's overlays, the demo's
folder) are written to a local staging folder and uploaded when complete (`Staging`). Local
paths work as before. Packed datasets and predict's inputs are local (see README).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

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


class Staging:
    """A local folder for outputs bound for `location`, uploaded there once they are complete.

    For a local `location` the folder is `location` itself (created). For a URL it is a
    temporary folder; leaving the `with` block without an error uploads every file under it
    to the URL, keeping relative paths, and deletes it; an error leaves the URL untouched.

    Attributes:
      local: the folder to write to.
      location: where the files end up (resolved).
    """

    def __init__(self, location):
        self.location = resolve(location)
        self.remote = is_url(self.location)
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.local = Path(self.location)

    def __enter__(self) -> Staging:
        if self.remote:
            self._tmp = tempfile.TemporaryDirectory(prefix="ffjax_staging_")
            self.local = Path(self._tmp.name)
        else:
            self.local.mkdir(parents=True, exist_ok=True)
        return self

    def final(self, local_path) -> epath.Path | Path:
        """Where `local_path` (a path under `local`) ends up."""
        if not self.remote:
            return Path(local_path)
        relative = Path(local_path).relative_to(self.local).as_posix()
        return epath.Path(self.location) if relative == "." else epath.Path(self.location) / relative

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._tmp is None:
            return False
        try:
            if exc is None:
                count = upload_tree(self.local, self.location)
                logging.info("Uploaded %d file(s) to %s.", count, self.location)
        finally:
            self._tmp.cleanup()
        return False


def upload_tree(local_dir, url) -> int:
    """Copies every file under `local_dir` to `url`, keeping relative paths; returns the count."""
    local_dir, count = Path(local_dir), 0
    for source in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        with source.open("rb") as src, (path(url) / source.relative_to(local_dir).as_posix()).open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        count += 1
    return count
