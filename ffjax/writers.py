"""Where training metrics go: the console, a JSONL file and TensorBoard event files.

clu's own writers import TensorFlow, which this stack does not install, so this module keeps
clu's writer interface (write_scalars / write_hparams / flush / close) over tensorboardX.
Processes other than 0 only log to the console, as clu's `create_default_writer` does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Mapping

import jax
import numpy as np

from ffjax import paths


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else value.tolist()
    return value


class MetricWriter:
    """Console + `metrics.jsonl` + TensorBoard (on process 0).

    Every `write_scalars` reaches the files at once (a killed run loses nothing it logged).
    On a local workdir `metrics.jsonl` is appended and flushed; on a bucket (`gs://`), where
    objects cannot be appended to, the file is rewritten whole and TensorBoard's event file
    is written locally and copied up at each write. A resumed run (`resume_step`) keeps the
    lines up to its checkpoint and drops the ones past it, which the restart will redo.
    """

    def __init__(self, workdir: str | None, *, tensorboard: bool = True, resume_step: int | None = None):
        self._lead = jax.process_index() == 0 and workdir is not None
        self._jsonl = None
        self._lines: list[str] | None = None
        self._tb = None
        self._tb_stage = None
        if not self._lead:
            return
        self._dir = paths.path(workdir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._remote = paths.is_url(workdir)
        jsonl = self._dir / "metrics.jsonl"
        lines = jsonl.read_text().splitlines(keepends=True) if jsonl.exists() else []
        if resume_step is not None:
            lines = [line for line in lines if (step := _step_of(line)) is None or step <= resume_step]
        if self._remote:
            self._lines = lines
            self._jsonl_path = jsonl
            self._upload_jsonl()
        else:
            with open(jsonl, "w") as f:
                f.writelines(lines)
            self._jsonl = open(jsonl, "a")
        if tensorboard:
            SummaryWriter = _summary_writer_class()
            if self._remote:
                self._tb_stage = tempfile.mkdtemp(prefix="ffjax_tb_")
                self._tb = SummaryWriter(self._tb_stage)
            else:
                self._tb = SummaryWriter(str(self._dir / "tensorboard"))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        scalars = {k: _plain(v) for k, v in scalars.items()}
        logging.info("[%d] %s", step, ", ".join(f"{k}={_fmt(v)}" for k, v in scalars.items()))
        if not self._lead:
            return
        line = json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n"
        if self._remote:
            self._lines.append(line)
        else:
            self._jsonl.write(line)
        if self._tb:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and np.isfinite(v):
                    self._tb.add_scalar(k, v, int(step))
        self.flush()

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        if self._tb:
            self._tb.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(hparams.items())))
            self.flush()

    def flush(self) -> None:
        if not self._lead:
            return
        if self._jsonl:
            self._jsonl.flush()
        if self._remote:
            self._upload_jsonl()
        if self._tb:
            self._tb.flush()
            if self._tb_stage:
                self._upload_tensorboard()

    def _upload_jsonl(self) -> None:
        self._jsonl_path.write_text("".join(self._lines))

    def _upload_tensorboard(self) -> None:
        remote = self._dir / "tensorboard"
        remote.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(self._tb_stage):
            with open(os.path.join(self._tb_stage, name), "rb") as f:
                (remote / name).write_bytes(f.read())

    def close(self) -> None:
        if not self._lead:
            return
        self.flush()
        if self._jsonl:
            self._jsonl.close()
        if self._tb:
            self._tb.close()
            if self._tb_stage:
                self._upload_tensorboard()
                shutil.rmtree(self._tb_stage, ignore_errors=True)


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


class Progress:
    """Steps/s, images/s and ETA over the steps since the last report (clu ReportProgress-like)."""

    def __init__(self, total_steps: int, batch_size: int, start_step: int = 0):
        self._total = total_steps
        self._batch = batch_size
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def __call__(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps = step - self._last_step
        dt = max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        rate = steps / dt
        eta = (self._total - step) / rate if rate > 0 else float("inf")
        return {"steps_per_sec": rate, "images_per_sec": rate * self._batch, "eta_minutes": eta / 60.0}


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch.

    tensorboardX imports torch at import time when it is installed (only to accept torch
    tensors, which ffjax never passes): 3.2 s of every `ffjax train` start where torch is
    installed (the test extra installs it). torch stays importable afterwards.
    """
    import sys

    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter
