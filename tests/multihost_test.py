"""Two processes × two CPU devices (gloo collectives) train like one process with four."""

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together, so two jobs never get the same one)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def launch(args, env):
    return subprocess.Popen([sys.executable, WORKER, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_processes_equal_one_process_with_four_devices(tiny_dataset, tmp_path):
    data_dir, config_name = tiny_dataset
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    port = free_port()
    procs = [
        launch([data_dir, config_name, tmp_path / "multi", tmp_path / f"multi{i}.npz", 2, i, port, 2], env)
        for i in range(2)
    ]
    single = launch([data_dir, config_name, tmp_path / "single", tmp_path / "single.npz", 1, 0, 0, 4], env)
    for p in procs + [single]:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-4000:]

    m0, m1, s = (np.load(tmp_path / f) for f in ("multi0.npz", "multi1.npz", "single.npz"))
    assert int(m0["processes"]) == 2 and int(m0["devices"]) == 4
    assert int(s["processes"]) == 1 and int(s["devices"]) == 4
    keys = [k for k in s.files if k[0] == "p" and k[1:].isdigit()]
    assert len(keys) > 4
    for k in keys:
        np.testing.assert_array_equal(m0[k], m1[k])  # both hosts hold the same parameters
        np.testing.assert_allclose(m0[k], s[k], rtol=1e-5, atol=1e-6)  # = one host, four devices
    assert int(m0["step"]) == int(s["step"]) == 3
    np.testing.assert_allclose(m0["auc"], s["auc"], atol=1e-6)  # the evaluator agrees too

    # Elastic resume: the 2 x 2 checkpoint of step 3 continues to step 6 on 1 process x 4
    # devices, on 4 processes x 1 device (a slice that came back another size) and on 1 x 8,
    # and each reaches what the 1 x 4 run reaches (resumed there, which equals uninterrupted:
    # e2e test).
    for name in ("on_1x4", "on_4x1", "on_1x8"):
        shutil.copytree(tmp_path / "multi", tmp_path / name)
    port = free_port()
    runs = [launch([data_dir, config_name, tmp_path / "single", tmp_path / "single6.npz", 1, 0, 0, 4, 6], env),
            launch([data_dir, config_name, tmp_path / "on_1x4", tmp_path / "on_1x4.npz", 1, 0, 0, 4, 6], env),
            # 8 devices, the same global batch: the same global example order continues.
            launch([data_dir, config_name, tmp_path / "on_1x8", tmp_path / "on_1x8.npz", 1, 0, 0, 8, 6], env)]
    runs += [launch([data_dir, config_name, tmp_path / "on_4x1", tmp_path / f"on_4x1_{i}.npz", 4, i, port, 1, 6], env)
             for i in range(4)]
    for p in runs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-4000:]
    reference = np.load(tmp_path / "single6.npz")
    for name in ("on_1x4.npz", "on_4x1_0.npz", "on_4x1_3.npz", "on_1x8.npz"):
        resumed = np.load(tmp_path / name)
        assert int(resumed["step"]) == int(reference["step"]) == 6, name
        for k in keys:
            np.testing.assert_allclose(resumed[k], reference[k], rtol=1e-5, atol=1e-6, err_msg=f"{name} {k}")


def test_sigterm_on_one_host_stops_every_host_at_the_same_step(tiny_dataset, tmp_path):
    """A preemptible slice: only process 1 gets SIGTERM (at its 3rd batch). Both hosts agree,
    save the same step, exit 143 (stopped, resumable); resuming on both reaches the parameters
    of an uninterrupted two-process run bit for bit.

    And a host that fails (process 1 hits a corrupt record at its 5th batch) stops the other
    one within seconds, not after JAX's heartbeat timeout (100 s) or its shutdown barrier
    (300 s): both exit 1, the other naming the failed process and its error; the checkpoint of
    step 3 stays."""
    data_dir, config_name = tiny_dataset
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}

    ports = iter(free_ports(4))

    def pair(workdir, name, sigterm_at=0):
        port = next(ports)
        return [launch([data_dir, config_name, workdir, tmp_path / f"{name}{i}.npz", 2, i, port, 2, 6,
                        sigterm_at if i == 1 else 0], env) for i in range(2)]

    def finish(procs, status):
        for p in procs:
            out, _ = p.communicate(timeout=600)
            assert p.returncode == status, out[-4000:]

    straight, stopped = pair(tmp_path / "straight", "straight"), pair(tmp_path / "resumed", "stopped", 3)
    finish(stopped, 143)
    steps = [int(np.load(tmp_path / f"stopped{i}.npz")["step"]) for i in range(2)]
    assert steps[0] == steps[1] and 4 <= steps[0] < 6  # one agreed step, before the end
    assert sorted(os.listdir(tmp_path / "resumed" / "checkpoints")) == ["3", str(steps[0])]
    resumed = pair(tmp_path / "resumed", "resumed")
    healthy, failing = pair(tmp_path / "failing", "failing", -5)
    failing_out, _ = failing.communicate(timeout=600)
    failed_at = time.monotonic()
    try:
        healthy_out, _ = healthy.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        healthy.kill()
        raise AssertionError("process 0 still runs 60 s after process 1 failed: " + healthy.communicate()[0][-3000:])
    assert failing.returncode == 1 and "corrupt record in shard 1" in failing_out, failing_out[-4000:]
    assert healthy.returncode == 1, healthy_out[-4000:]
    assert "process 1 of 2 failed: OSError: corrupt record in shard 1" in healthy_out, healthy_out[-4000:]
    print(f"process 0 stopped {time.monotonic() - failed_at:.1f} s after process 1 exited")
    assert sorted(os.listdir(tmp_path / "failing" / "checkpoints")) == ["3"]
    finish(resumed, 0)
    finish(straight, 0)
    a, b = np.load(tmp_path / "straight0.npz"), np.load(tmp_path / "resumed0.npz")
    assert int(a["step"]) == int(b["step"]) == 6
    keys = [k for k in a.files if k[0] == "p" and k[1:].isdigit()]
    assert len(keys) > 4
    for k in keys:
        np.testing.assert_array_equal(a[k], b[k])  # bit-identical, not merely close
