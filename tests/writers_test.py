"""Tests of ffjax.writers: what a killed run keeps, what a resumed run drops."""

import json

from ffjax import writers


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_every_logged_line_is_on_disk_before_close(tmp_path):
    """A `kill -9` skips close(): nothing logged may depend on it."""
    writer = writers.MetricWriter(str(tmp_path))
    for step in (1, 2, 3):
        writer.write_scalars(step, {"train/loss": 1.0 / step})
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2, 3]  # not closed, not flushed by hand
    events = list((tmp_path / "tensorboard").iterdir())
    assert events and all(p.stat().st_size > 0 for p in events)


def test_a_resumed_run_keeps_earlier_lines_and_drops_those_past_its_checkpoint(tmp_path):
    first = writers.MetricWriter(str(tmp_path))
    for step in (1, 2, 3, 4, 5):
        first.write_scalars(step, {"train/loss": 0.5})
    # Killed after logging step 5; the newest checkpoint is step 3, so steps 4-5 are redone.
    resumed = writers.MetricWriter(str(tmp_path), resume_step=3)
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2, 3]
    resumed.write_scalars(4, {"train/loss": 0.4})
    resumed.close()
    assert _steps(tmp_path / "metrics.jsonl") == [1, 2, 3, 4]
