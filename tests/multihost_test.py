"""Two processes × two CPU devices (gloo collectives) train like one process with four."""

import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
