"""Benchmark harness: iqdb-ivf-jax against faiss-cpu, side by side in one process.

Run ``python -m benchmarks.run`` (see ``benchmarks/README.md``).
"""
