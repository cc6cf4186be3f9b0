"""Tests of ffjax.workdir_lock: one run per workdir, stale locks do not block a resume."""

import json
import socket
import subprocess
import sys
import time

import pytest

from ffjax import train, workdir_lock
from tests.helpers import config_on


def _write_lock(workdir, **fields):
    record = {"host": socket.gethostname(), "pid": 1, "started": time.time(), "heartbeat": time.time(),
              "started_utc": "2026-11-30 10:00:00 UTC", **fields}
    (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(record))


def test_a_second_run_stops_at_once_naming_the_holder(tiny_dataset, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, pid=holder.pid)
        with pytest.raises(workdir_lock.WorkdirInUse, match=f"in use by another run: host {socket.gethostname()}, pid {holder.pid}, started 2026-11-30"):
            train.train_and_evaluate(config_on(tiny_dataset), str(tmp_path))
        assert not (tmp_path / "checkpoints").exists()  # stopped before touching anything
    finally:
        holder.kill()


def test_a_lock_whose_holder_is_gone_does_not_block_and_is_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path, pid=dead.pid)  # a run killed with -9 on this host
    with workdir_lock.WorkdirLock(str(tmp_path)):
        held = json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())
        assert held["pid"] != dead.pid
        with pytest.raises(workdir_lock.WorkdirInUse):  # the same workdir again, from this live run
            with workdir_lock.WorkdirLock(str(tmp_path)):
                pass
    assert not (tmp_path / workdir_lock.LOCK_NAME).exists()
    # From another host only the heartbeat tells: fresh blocks, old does not.
    _write_lock(tmp_path, host="other-host", pid=123)
    with pytest.raises(workdir_lock.WorkdirInUse, match="other-host"):
        with workdir_lock.WorkdirLock(str(tmp_path)):
            pass
    _write_lock(tmp_path, host="other-host", pid=123, heartbeat=time.time() - 2 * workdir_lock.STALE_S)
    with workdir_lock.WorkdirLock(str(tmp_path)):
        pass
