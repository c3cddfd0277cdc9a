"""Benchmarks: the timing harness, the components × backends latency matrix and its reports, the labeling
benchmark, and the one-image segmenter path that ``infer`` shares.

Modules (import what you use; nothing heavy is imported here):

- :mod:`zsplg_fast.bench.timing`: ``time_callable`` / ``time_engine`` (warm-up, budget, CUDA sync, memory);
- :mod:`zsplg_fast.bench.matrix`: ``run_bench(cfg)`` → ``bench.json`` / ``bench.md`` / ``bench.png``;
- :mod:`zsplg_fast.bench.report`, :mod:`zsplg_fast.bench.plot`: writers and the schema check;
- :mod:`zsplg_fast.bench.backends`, :mod:`zsplg_fast.bench.components`: the columns and the rows;
- :mod:`zsplg_fast.bench.machine`: machine, library versions, allocator and thread settings;
- :mod:`zsplg_fast.bench.segmenter`, :mod:`zsplg_fast.bench.overlays`: segmenter on any Engine, grids;
- :mod:`zsplg_fast.bench.labeling`: end-to-end labeling, upstream vs ours.
"""
