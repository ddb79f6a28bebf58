"""Ground truth, recall, the n_probes sweep and equal-recall interpolation."""

import contextlib
import math
import time

import jax
import numpy as np

from .methods import CompileMeter, Method


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, *, how: str = "float64") -> np.ndarray:
    """``int64[nq, k]`` exact Euclidean neighbours, nearest first (ties: lower row).

    ``how="float64"`` computes ``|b|^2 - 2 q.b`` in float64 NumPy, in query
    chunks; ``"faiss"`` uses ``faiss.IndexFlatL2`` (float32, faster on big sets).
    """
    k = min(k, base.shape[0])
    if how == "faiss":
        import faiss

        flat = faiss.IndexFlatL2(base.shape[1])
        flat.add(base)
        return flat.search(queries, k)[1].astype(np.int64)
    if how != "float64":
        raise ValueError(f"ground truth must be 'float64' or 'faiss', got {how!r}")
    b = base.astype(np.float64)
    bn = np.einsum("ij,ij->i", b, b)
    chunk = max(1, int(2**25 // max(base.shape[0], 1)))  # ~256 MiB of float64 distances
    out = np.empty((queries.shape[0], k), np.int64)
    for s in range(0, queries.shape[0], chunk):
        q = queries[s : s + chunk].astype(np.float64)
        d = bn[None, :] - 2.0 * (q @ b.T)
        part = (
            np.argpartition(d, k - 1, axis=1)[:, :k]
            if k < d.shape[1]
            else np.tile(np.arange(d.shape[1]), (d.shape[0], 1))
        )
        pd = np.take_along_axis(d, part, axis=1)
        order = np.lexsort((part, pd), axis=1)
        out[s : s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of ``|found[:, :k] & truth[:, :k]| / k`` (padding -1 never matches)."""
    k = truth.shape[1]
    f = np.asarray(found)[:, :k].astype(np.int64)
    hits = (f[:, :, None] == truth[:, None, :k]).any(axis=2).sum(axis=1)
    return float(hits.mean() / k)


def _block(out):
    jax.block_until_ready(out)
    return out


def measure_point(
    method: Method,
    n_probes: int,
    queries: np.ndarray,
    truth: np.ndarray,
    *,
    k: int,
    repeats: int,
    latency_queries: int,
    latency_threads: int | None = None,
) -> dict:
    """Recall, batch QPS and single-query latency of ``method`` at ``n_probes``.

    Batch: one warm-up call over all queries (compiles; timed as
    ``first_call_s``), then ``repeats`` timed calls; QPS = nq / median time.
    Latency: one untimed pass over the first ``latency_queries`` queries (so every
    scan-size bucket is compiled), then one timed call per query; p50/p99 in ms.
    ``latency_threads`` (faiss only) sets its OpenMP threads for the latency loop.
    ``compiles_timed_*`` count JAX compilations inside the timed loops (should be 0).
    """
    method.set_probes(n_probes)
    nq = queries.shape[0]
    with CompileMeter() as warm:
        t = time.perf_counter()
        _block(method.search(queries, k))
        first = time.perf_counter() - t
    times = []
    with CompileMeter() as timed_batch:
        for _ in range(repeats):
            t = time.perf_counter()
            _, ids = _block(method.search(queries, k))
            times.append(time.perf_counter() - t)
    point = {
        "method": method.name,
        "family": method.family,
        "impl": method.impl,
        "n_probes": int(n_probes),
        "recall": recall_at_k(ids, truth),
        "batch_queries": int(nq),
        "batch_times_s": times,
        "batch_qps": nq / float(np.median(times)),
        "first_call_s": first,
        "first_call_compile": warm.as_dict(),
        "compiles_timed_batch": timed_batch.compiles,
    }
    if method.stats is not None:
        last = method.stats().extra.get("last_search") or {}
        point["scan_padding"] = last.get("scan_padding")
        point["rows_scanned"] = last.get("rows_scanned")
        point["live_rows_in_probed_lists"] = last.get("live_rows_in_probed_lists")
    lq = queries[: max(0, min(latency_queries, nq))]
    if lq.shape[0]:
        scope = contextlib.nullcontext()
        if latency_threads and method.thread_scope is not None:
            scope = method.thread_scope(latency_threads)
        with scope:
            point.update(_latency(method, lq, k))
    return point


def _latency(method: Method, lq: np.ndarray, k: int) -> dict:
    with CompileMeter() as warm:  # untimed pass: compiles every scan size met
        for q in lq:
            _block(method.search(q[None], k))
    lat = np.empty(lq.shape[0])
    with CompileMeter() as timed:
        for i, q in enumerate(lq):
            t = time.perf_counter()
            _block(method.search(q[None], k))
            lat[i] = time.perf_counter() - t
    p50, p99 = np.percentile(lat, [50, 99]) * 1e3
    return {
        "latency_queries": int(lq.shape[0]),
        "latency_p50_ms": float(p50),
        "latency_p99_ms": float(p99),
        "latency_mean_ms": float(lat.mean() * 1e3),
        "latency_warmup_compile": warm.as_dict(),
        "compiles_timed_latency": timed.compiles,
    }


def at_recall(points: list[dict], target: float, key: str) -> dict | None:
    """``points[key]`` at recall ``target``, by interpolating over the sweep.

    Walks the points in ``n_probes`` order to the first with recall >= target
    and interpolates ``log(key)`` linearly in recall between it and the point
    before. If the first point already reaches the target its value is used
    (``"bracket": "first"``). Returns None if no point reaches the target.
    """
    pts = sorted((p for p in points if p.get(key) is not None), key=lambda p: p["n_probes"])
    for j, p in enumerate(pts):
        if p["recall"] >= target:
            if j == 0:
                return {"value": p[key], "n_probes": [p["n_probes"]], "bracket": "first"}
            lo = pts[j - 1]  # recall below target, so the denominator is > 0
            t = (target - lo["recall"]) / (p["recall"] - lo["recall"])
            v = math.exp((1 - t) * math.log(lo[key]) + t * math.log(p[key]))
            return {
                "value": v,
                "n_probes": [lo["n_probes"], p["n_probes"]],
                "bracket": "interpolated",
            }
    return None
