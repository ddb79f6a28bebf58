"""One process of the multi-host test (``tests/test_multihost.py``).

``python tests/_multihost_worker.py PROCESS_ID N_PROCESSES PORT OUT`` joins a
JAX runtime of ``N_PROCESSES`` processes on loopback (coordinator
``127.0.0.1:PORT``, CPU collectives over gloo), each with 4 CPU devices of its
own, builds the index of :func:`build` split over every device of every process,
and writes :func:`results` to ``OUT/result<PROCESS_ID>.npz``. The test builds
the same index on one device and compares.
"""

import sys

import numpy as np

DIM = 16


def build(devices=None):
    """The index every process builds (the same calls in every process)."""
    from iqdb_ivf_jax import IvfConfig, IvfIndex

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, DIM)).astype(np.float32)
    cfg = IvfConfig(n_clusters=16, n_probes=4, use_pq=True, pq_subvectors=4, pq_refine_factor=2)
    idx = IvfIndex(DIM, "euclidean", cfg, devices=devices)
    idx.train(x[:1000])
    meta = [{"g": i % 3} for i in range(len(x))]
    idx.insert_batch(list(range(2000)), x[:2000], meta[:2000])
    idx.insert_batch(list(range(2000, 3000)), x[2000:], meta[2000:])
    idx.delete(list(range(0, 3000, 7)))
    idx.upsert([1, 2], x[:2] * 0.5)
    return idx


def results(idx) -> dict:
    """What the processes and the one-device index must agree on."""
    q = np.random.default_rng(1).standard_normal((24, DIM)).astype(np.float32)
    d, i = idx.search_arrays(q, 10)
    fd, fi = idx.search_arrays(q, 5, filter={"g": 2}, n_probes=8)
    hit = idx.search(q[0], 3)
    return {
        "d": d,
        "i": i,
        "fd": fd,
        "fi": fi,
        "single": np.array([h.id for h in hit]),
        "get": idx.get(5)[0],
        "len": np.array(len(idx)),
    }


def main() -> None:
    pid, n_proc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    import jax

    jax.config.update("jax_num_cpu_devices", 4)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=n_proc,
        process_id=pid,
        initialization_timeout=60,
    )
    try:
        assert jax.process_count() == n_proc and len(jax.devices()) == 4 * n_proc
        idx = build(devices=jax.devices())
        res = results(idx)
        res["rows_per_device"] = np.array([d["rows"] for d in idx.stats().extra["devices"]])
        np.savez(f"{out}/result{pid}.npz", **res)
    finally:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
