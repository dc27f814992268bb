"""``make bench``: throughput, CPU, token requests, cold start and rate-limit behaviour of the worker,
issue 13's scale-out, pool and outage figures, and the batch lane's API calls and price.

See docs/bench.md for what each figure means; ``python -m bench --help`` to run it.
"""

# The sections of a run, in order (``python -m bench --only`` picks some). Here, not in bench.scenarios,
# because bench/__main__.py needs them before it may import aiohttp.
SECTIONS = ("throughput", "cpu_and_tokens", "cold_start", "rate_limit", "scaleout", "pool", "outage", "batch_lane")
