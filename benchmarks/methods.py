"""The indexes under test, built the same way and searched through one interface.

Each method is a :class:`Method`: a name, a family (the configurations compared at
equal recall), how to set ``n_probes`` and how to search a ``(nq, d)`` batch. Ours
and faiss share nlist, M, the refine factor, the k-means iteration count and the
training-sample cap (faiss trains on at most ``256 * nlist`` points; ours is given
``training_sample_size = min(n, 256 * nlist)``).
"""

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Self

import jax
import numpy as np

from iqdb_ivf_jax import IvfConfig, IvfIndex

FLAT = "IVF-Flat"
PQ_REFINE = "IVF-PQ+refine"
PQ_ADC = "IVF-PQ (ADC only)"
FAMILIES = (FLAT, PQ_REFINE, PQ_ADC)

_COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "backend_compile_s",
}


_CACHE_HIT = "/jax/compilation_cache/cache_hits"


class CompileMeter:
    """Counts JAX compilations and their time while active (a context manager).

    ``compiles`` is the number of XLA backend compilations, ``cache_hits`` the
    programs loaded from the persistent compilation cache instead (JAX times a
    hit as a backend compile too; it is not counted in ``compiles``);
    ``seconds`` the time spent tracing, lowering and compiling (or loading). A
    timed loop with ``compiles + cache_hits > 0`` built a program and its
    timings include that.
    """

    def __init__(self):
        self.compiles = 0
        self.cache_hits = 0
        self.parts = dict.fromkeys(_COMPILE_EVENTS.values(), 0.0)

    @property
    def seconds(self) -> float:
        return float(sum(self.parts.values()))

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        part = _COMPILE_EVENTS.get(event)
        if part is None:
            return
        self.parts[part] += duration
        if part == "backend_compile_s":
            self.compiles += 1

    def _listen_hit(self, event: str, **kwargs) -> None:
        if event == _CACHE_HIT:
            self.cache_hits += 1
            self.compiles -= 1

    def __enter__(self) -> Self:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        jax.monitoring.register_event_listener(self._listen_hit)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)
        jax.monitoring.unregister_event_listener(self._listen_hit)

    def as_dict(self) -> dict:
        return {
            "compiles": self.compiles,
            "cache_hits": self.cache_hits,
            "seconds": self.seconds,
            **self.parts,
        }


@dataclasses.dataclass
class Method:
    """One searchable configuration.

    Attributes:
        name: e.g. ``"ours-flat"``.
        family: one of :data:`FAMILIES`; ours and faiss of a family are compared.
        impl: ``"ours"`` or ``"faiss"``.
        set_probes: sets ``n_probes`` (faiss ``nprobe``) and any per-method knob.
        search: ``(queries f32[nq, d], k) -> (D, I)`` host arrays.
        build: the build record this method's index came from (shared by the
            two PQ methods of one implementation).
        stats: ours only, ``() -> IndexStats`` of the index.
        thread_scope: faiss only, ``n -> context`` running its body on ``n``
            OpenMP threads (for ``--latency-threads``).
    """

    name: str
    family: str
    impl: str
    set_probes: Callable[[int], None]
    search: Callable[[np.ndarray, int], tuple]
    build: dict
    stats: Callable[[], object] | None = None
    thread_scope: Callable[[int], contextlib.AbstractContextManager] | None = None


def _timed(fn, *args) -> float:
    """Seconds for ``fn(*args)`` including the device work it dispatched.

    ``IvfIndex.train``/``insert_batch`` return None while their kernels may still
    run asynchronously (e.g. PQ codebook fitting), so blocking on the result is
    not enough: wait for every live device array, or that work would be billed
    to whatever is timed next.
    """
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(jax.live_arrays())
    return time.perf_counter() - t


# ----------------------------------------------------------------------- ours
def ours_config(n: int, args, *, pq: bool) -> IvfConfig:
    """The IvfConfig matching the faiss build (same nlist, iterations, sample cap)."""
    cfg = IvfConfig(
        n_clusters=args.nlist,
        n_probes=1,
        kmeans_max_iterations=args.kmeans_iters,
        kmeans_init=getattr(args, "kmeans_init", "kmeans++"),
        training_sample_size=min(n, 256 * args.nlist),
        spill_lambda=getattr(args, "spill_lambda", None),
    )
    if pq:
        cfg = cfg.with_use_pq(True).with_pq_subvectors(args.m).with_pq_refine_factor(args.refine)
        cfg = cfg.with_pq_by_residual(bool(getattr(args, "faiss_by_residual", False)))
    return cfg


def _build_ours_once(base: np.ndarray, cfg: IvfConfig) -> tuple[IvfIndex, dict]:
    index = IvfIndex(base.shape[1], "euclidean", cfg)
    ids = np.arange(base.shape[0])
    with CompileMeter() as m_train:
        train_s = _timed(index.train, base)
    with CompileMeter() as m_add:
        add_s = _timed(index.insert_batch, ids, base)
    rec = {
        "train_s": train_s,
        "add_s": add_s,
        "total_s": train_s + add_s,
        "compile_train": m_train.as_dict(),
        "compile_add": m_add.as_dict(),
    }
    return index, rec


def build_ours(base: np.ndarray, args, *, pq: bool) -> tuple[IvfIndex, dict]:
    """Build ours; with ``args.warm_build`` build it twice and keep the second.

    The first ("cold") build includes tracing and compiling every kernel; the
    second, identical one in the same process reuses them ("warm"), so
    ``cold - warm`` estimates compilation (also measured directly by
    :class:`CompileMeter`).
    """
    cfg = ours_config(base.shape[0], args, pq=pq)
    index, cold = _build_ours_once(base, cfg)
    rec = {"impl": "ours", "config": dataclasses.asdict(cfg), "cold": cold}
    if args.warm_build:
        del index
        index, rec["warm"] = _build_ours_once(base, cfg)
    st = index.stats()
    n = base.shape[0]
    rec.update(
        bytes_per_vector=st.memory_bytes / n,
        memory_bytes=st.memory_bytes,
        memory_breakdown=st.extra["memory"],
        padding_ratio=st.extra["padding_ratio"],
        block_size=st.extra["block_size"],
        kmeans_iterations=st.extra["kmeans_iterations"],
        largest_list_over_mean=_largest_over_mean(index.cluster_stats().cluster_sizes),
    )
    return index, rec


def _largest_over_mean(sizes) -> float | None:
    sizes = np.asarray(sizes, np.float64)
    return float(sizes.max() / sizes.mean()) if sizes.size and sizes.mean() > 0 else None


def ours_methods(index: IvfIndex, build: dict, *, pq: bool, refine: int) -> list[Method]:
    def search(q, k):
        return index.search_arrays(q, k)

    if not pq:
        return [Method("ours-flat", FLAT, "ours", index.set_n_probes, search, build, index.stats)]

    def probes_with(r):
        def set_probes(p):
            index.set_n_probes(p)
            index.set_pq_refine_factor(r)

        return set_probes

    return [
        Method(
            "ours-pq-refine", PQ_REFINE, "ours", probes_with(refine), search, build, index.stats
        ),
        Method("ours-pq-adc", PQ_ADC, "ours", probes_with(0), search, build, index.stats),
    ]


# ---------------------------------------------------------------------- faiss
def _faiss_record(train_s: float, add_s: float, index, n: int) -> dict:
    import faiss

    nbytes = int(faiss.serialize_index(index).size)
    return {
        "impl": "faiss",
        "cold": {"train_s": train_s, "add_s": add_s, "total_s": train_s + add_s},
        "bytes_per_vector": nbytes / n,
        "memory_bytes": nbytes,
    }


def build_faiss(base: np.ndarray, args, *, pq: bool) -> list[Method]:
    """faiss IndexIVFFlat, or IndexIVFPQ (M x 8 bits) wrapped in IndexRefineFlat.

    k-means runs ``args.kmeans_iters`` rounds for the coarse quantizer and (to
    match ours, which uses one iteration cap for both) for the PQ codebooks.
    """
    import faiss

    n, d = base.shape
    quantizer = faiss.IndexFlatL2(d)
    if not pq:
        ivf = faiss.IndexIVFFlat(quantizer, d, args.nlist)
        ivf.cp.niter = args.kmeans_iters
        train_s = _timed(ivf.train, base)
        add_s = _timed(ivf.add, base)
        rec = _faiss_record(train_s, add_s, ivf, n)
        rec["largest_list_over_mean"] = _largest_over_mean(
            [ivf.invlists.list_size(i) for i in range(args.nlist)]
        )
        return [
            Method(
                "faiss-flat",
                FLAT,
                "faiss",
                _nprobe_setter(ivf),
                ivf.search,
                rec,
                thread_scope=faiss_threads,
            )
        ]

    ivfpq = faiss.IndexIVFPQ(quantizer, d, args.nlist, args.m, 8)
    ivfpq.cp.niter = args.kmeans_iters
    ivfpq.pq.cp.niter = args.kmeans_iters
    ivfpq.by_residual = args.faiss_by_residual
    refined = faiss.IndexRefineFlat(ivfpq)
    refined.k_factor = float(args.refine)
    train_s = _timed(refined.train, base)
    add_s = _timed(refined.add, base)  # adds to the IVF-PQ and to the flat refine store
    rec = _faiss_record(train_s, add_s, refined, n)
    rec["bytes_per_vector_ivfpq_only"] = faiss.serialize_index(ivfpq).size / n
    rec["by_residual"] = bool(ivfpq.by_residual)
    rec["_keep"] = (quantizer, ivfpq)  # faiss objects must outlive the wrapper
    set_probes = _nprobe_setter(ivfpq)
    return [
        Method(
            "faiss-pq-refine",
            PQ_REFINE,
            "faiss",
            set_probes,
            refined.search,
            rec,
            thread_scope=faiss_threads,
        ),
        Method(
            "faiss-pq-adc",
            PQ_ADC,
            "faiss",
            set_probes,
            ivfpq.search,
            rec,
            thread_scope=faiss_threads,
        ),
    ]


@contextlib.contextmanager
def faiss_threads(n: int):
    """Run the body with ``n`` faiss OpenMP threads, then restore the count."""
    import faiss

    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def _nprobe_setter(ivf):
    def set_probes(p):
        ivf.nprobe = int(p)

    return set_probes
