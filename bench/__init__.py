"""``make bench``: throughput, CPU, token requests, cold start and rate-limit behaviour of the worker.

See docs/bench.md for what each figure means; ``python -m bench --help`` to run it.
"""
