"""Benchmarks of the engine, each beside a raw aio-pika baseline measured in the same run.

``python -m bench`` (``make bench``) runs every scenario and prints one table; the
figures are also written to ``bench/results/`` as JSON and markdown. Workers run as
separate processes (``python -m leveret worker bench.apps:app`` and
``python -m bench.raw``), so RSS and CPU are per process.
"""
