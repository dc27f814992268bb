"""The local queue host under cProfile, switched on after the imports so the profile shows run-time costs.

Run: ``python -m bench.profiled_host --profile-out FILE [functions_host arguments]``; the profile
is written when the host stops (SIGTERM lets running invocations finish, then returns).
"""

from __future__ import annotations

import argparse
import cProfile
import sys
from pathlib import Path

import function_app  # noqa: F401  # imported before profiling; index_app finds it in sys.modules
from emulators import functions_host


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiled_host", add_help=False)
    parser.add_argument("--profile-out", type=Path, required=True)
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    # The default (fast, wall-clock) timer: a CPU timer costs ~2.5x and inflates cheap, frequent calls.
    # On the event-loop thread wall time is CPU time except while the loop waits in epoll (reported apart).
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        functions_host.main(rest)
    finally:
        profiler.disable()
        profiler.dump_stats(str(args.profile_out))


if __name__ == "__main__":
    main()
