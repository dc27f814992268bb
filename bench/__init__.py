"""``make bench``: throughput, CPU, token requests and cold start of the worker, its behaviour under a rate
limit and issue 13's scale-out, pool and outage figures, the batch lane's API calls and price, and issue 22's
background jobs and flex price (bench/responses.py).

See docs/bench.md for what each figure means; ``python -m bench --help`` to run it.
"""

# The sections of a run, in order (``python -m bench --only`` picks some). Here, not in bench.scenarios,
# because bench/__main__.py needs them before it may import aiohttp.
# Figure 5 has no section of its own: it is the scale-out's K = 1 run.
SECTIONS = ("throughput", "cpu_and_tokens", "cold_start", "scaleout", "pool", "outage", "batch_lane", "responses")
