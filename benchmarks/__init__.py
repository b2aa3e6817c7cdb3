"""Benchmarks of u2qt: model throughput and quality (``bench_model``), the nightly Spark job
(``bench_pipeline``), both plus a summary (``run_all``). Each writes ``<out>/<name>.json``."""
