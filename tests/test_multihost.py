"""A sharded index across 2 processes (``jax.distributed`` on loopback, CPU
collectives): every process gets the one-device index's results."""

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from _multihost_worker import build, results

_WORKER = Path(__file__).with_name("_multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_device_results(tmp_path):
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(_WORKER), str(pid), "2", str(port), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=150)[0])
    finally:
        for p in procs:  # a process left waiting on its peer never hangs the suite
            p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    want = results(build())
    for pid in range(2):
        got = dict(np.load(tmp_path / f"result{pid}.npz"))
        per_device = got.pop("rows_per_device")
        assert per_device.shape == (8,) and per_device.sum() == want["len"]
        assert (per_device > 0).sum() >= 2  # the rows really are spread
        for key, value in want.items():
            np.testing.assert_array_equal(
                got[key].view(np.uint32) if got[key].dtype == np.float32 else got[key],
                value.view(np.uint32) if value.dtype == np.float32 else value,
                err_msg=f"process {pid}: {key}",
            )
