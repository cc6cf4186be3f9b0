"""Where training metrics go: the console, a JSONL file and TensorBoard event files.

clu's own writers import TensorFlow, which this stack does not install, so this module keeps
clu's writer interface (write_scalars / write_hparams / flush / close) over tensorboardX.
Processes other than 0 only log to the console, as clu's `create_default_writer` does.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Mapping

import jax
import numpy as np


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else value.tolist()
    return value


class MetricWriter:
    """Console + `metrics.jsonl` + TensorBoard (on process 0)."""

    def __init__(self, workdir: str | None, *, tensorboard: bool = True):
        self._lead = jax.process_index() == 0 and workdir is not None
        self._jsonl = None
        self._tb = None
        if self._lead:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        scalars = {k: _plain(v) for k, v in scalars.items()}
        logging.info("[%d] %s", step, ", ".join(f"{k}={_fmt(v)}" for k, v in scalars.items()))
        if self._jsonl:
            self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **scalars}) + "\n")
        if self._tb:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and np.isfinite(v):
                    self._tb.add_scalar(k, v, int(step))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        if self._tb:
            self._tb.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(hparams.items())))

    def flush(self) -> None:
        if self._jsonl:
            self._jsonl.flush()
        if self._tb:
            self._tb.flush()

    def close(self) -> None:
        self.flush()
        if self._jsonl:
            self._jsonl.close()
        if self._tb:
            self._tb.close()


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
