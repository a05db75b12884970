"""Reproducible benchmarks of the segments engine: ``python -m bench`` (``--quick`` for a short run).

Modules: ``datasets`` (seeded workloads, cached in ``bench/.cache``),
``expressions`` (queries, reference evaluators, the physical floor),
``timing`` (interleaved rounds, medians, p99s, ratios), ``machine``
(environment and memory bandwidth), ``baselines`` (chDB, Redis),
``proposals`` (engine patches measured side by side), one module per
section (``engine_bench``, ``http_bench``, ``ingest_bench``, ``memory_bench``)
and ``report`` (``RESULTS.md`` and charts).
"""
