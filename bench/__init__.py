"""Reproducible benchmarks of the segments engine: ``python -m bench`` (``--quick`` for a short run).

Modules: ``datasets`` (seeded workloads, cached in ``bench/.cache``),
``expressions`` (queries, reference evaluators, the physical floor),
``timing`` (interleaved rounds, medians, p99s), ``machine`` (environment and
memory bandwidth), ``baselines`` (chDB, Redis), ``processes`` (child
processes), one module per section (``engine_bench``, ``http_bench`` with its
load generator ``http_client``, ``ingest_bench``, ``memory_bench``),
``runner`` (runs the sections), ``goals`` (what a run is judged against),
``report`` (derived figures and ``RESULTS.md``) and ``plots`` (the charts).
"""
