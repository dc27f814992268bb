"""``make bench``: run the worker through the local queue host against Azurite and the emulators.

Writes ``bench/results.json``, ``bench/results.md`` (the table docs/bench.md quotes) and ``bench/profile.txt``;
worker logs and the raw profile go to ``bench/out/`` (git-ignored). ``--only`` runs some sections
(e.g. ``--only scaleout`` or ``--only pool,outage``) and then writes to ``bench/out/`` unless ``--out``
says otherwise, so a partial run never replaces the full run's files.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

from bench import SECTIONS
from emulators import netguard
from emulators.stack import environment

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scale", choices=["full", "smoke"], default="full", help="smoke: every path, tiny counts")
    parser.add_argument(
        "--only",
        action="append",
        metavar="SECTION[,SECTION]",
        help=f"run only these sections (repeatable): {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--out", type=Path, help="where results.json/.md and profile.txt go (default: bench/; with --only, the workdir)"
    )
    parser.add_argument("--workdir", type=Path, default=HERE / "out", help="logs and scratch (emptied first)")
    parser.add_argument(
        "--long-outage",
        action="store_true",
        help="also run figure 8's long outage (the pool's primary down 10 minutes at full scale); "
        "without it, its row says it was not run",
    )
    parser.add_argument(
        "--all-scales",
        action="store_true",
        help="also run figure 6's K that no target judges (K = 4 at full scale); without it, their rows say "
        "they were not run",
    )
    parser.add_argument(
        "--long-outage-alone",
        action="store_true",
        help="also run the only deployment (no pool) down as long as figure 8's long outage (10 minutes at full "
        "scale); without it, its row says it was not run",
    )
    parser.add_argument(
        "--shared-budget",
        action="store_true",
        help="run the scale-out, pool and outage workers with PACING_SHARED_BUDGET=true (one budget per "
        "deployment in the worker-only container; off by default, as shipped)",
    )
    args = parser.parse_args(argv)
    only = [name.strip() for value in args.only or [] for name in value.split(",") if name.strip()] or None
    unknown = sorted(set(only or []) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    out = args.out or (HERE if only is None else args.workdir)
    # First, before anything imports aiohttp (it reads SSL_CERT_FILE once, at import): trust the
    # keyless Azurite's certificate. Then this process dials nothing but loopback, like the tests.
    cert_dir = environment.trust_local_certificate()
    netguard.install()
    from bench.config import FULL, SMOKE
    from bench.report import markdown, write_outputs
    from bench.scenarios import run_all
    from emulators.stack.services import start_local_azure

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    scale = FULL if args.scale == "full" else SMOKE
    long = "with" if args.long_outage else "without"
    alone = "with" if args.long_outage_alone else "without"
    scales = "with" if args.all_scales else "without"
    budget = "one shared budget" if args.shared_budget else "each its own gate (shipped)"
    sections = ", ".join(only or SECTIONS)
    print(
        f"bench: scale {scale.name}; sections {sections}, {long} the long outage, {alone} the only deployment's "
        f"long outage, {scales} the scale-out's unjudged K; quota workers pacing on {budget}; "
        f"logs in {args.workdir}",
        flush=True,
    )
    with start_local_azure(args.workdir, cert_dir) as stack:
        run = run_all(
            stack,
            scale,
            out,
            args.workdir / "logs",
            only,
            long_outage=args.long_outage,
            all_scales=args.all_scales,
            shared_budget=args.shared_budget,
            long_outage_alone=args.long_outage_alone,
        )
        report = asyncio.run(run)
    write_outputs(report, out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
