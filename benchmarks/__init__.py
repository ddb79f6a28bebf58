"""Benchmark harness: iqdb-ivf-jax against faiss-cpu, side by side in one process.

Run ``python -m benchmarks.run`` (see ``benchmarks/README.md``).

Benchmarks measure cold compilation: the library's persistent compilation cache
is off in a benchmark process unless ``IQDB_IVF_JAX_CACHE`` is set (to a folder:
then compile times are those of a warm cache, and ``cache_hits`` count them).
"""

import os

os.environ.setdefault("IQDB_IVF_JAX_CACHE", "off")
