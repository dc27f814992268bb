"""Azure OpenAI data-plane emulator: chat completions behind Entra ID auth, RBAC, quotas and faults.

``python -m emulators.aoai --port 0 --grant <oid>`` serves it on its own and prints the endpoint to export.
"""

from __future__ import annotations

import argparse

from emulators import _server
from emulators.aoai.app import start
from emulators.aoai.config import EmulatorConfig
from emulators.tokens import TokenIssuer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emulators.aoai", description=(__doc__ or "").split("\n\n")[0])
    _server.loopback_args(parser, default_port=0)
    parser.add_argument("--state-dir", help="shared signing-key directory (default $LOCAL_AZURE_DIR or .local-azure)")
    parser.add_argument(
        "--grant", action="append", default=[], metavar="OID", help="principal holding the role (repeatable)"
    )
    parser.add_argument("--grant-any", action="store_true", help="every valid token holds the role")
    parser.add_argument(
        "--deployment",
        action="append",
        default=[],
        metavar="NAME[=MODEL]",
        help="deployment (repeatable; default gpt-4o-mini); its model decides the rules: gpt-5*/o1*/o3*/o4* are "
        "reasoning models (known names such as gpt-5.4-mini get their versioned model)",
    )
    parser.add_argument("--latency-ms", type=float, default=0, help="fixed latency per completion")
    parser.add_argument(
        "--tpm",
        type=int,
        default=None,
        help="tokens per minute per deployment (default unlimited); a request is charged its prompt + "
        "max_completion_tokens or max_tokens (4096 if neither)",
    )
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute per deployment (default unlimited)")
    args = parser.parse_args(argv)
    deployments = dict(spec.partition("=")[::2] for spec in args.deployment) or {"gpt-4o-mini": ""}
    config = EmulatorConfig.model_validate(
        {
            "deployments": {name: model or None for name, model in deployments.items()},
            "grants": args.grant,
            "grant_any": args.grant_any,
            "latency_ms": args.latency_ms,
            "tpm": args.tpm,
            "rpm": args.rpm,
        }
    )
    public_pem = TokenIssuer(args.state_dir).public_pem

    def banner(running: _server.Running) -> str:
        return f"export AZURE_OPENAI_ENDPOINT={running.url}\n# deployments: {', '.join(config.deployments)}"

    _server.run_forever(lambda: start(config, public_pem=public_pem, host=args.host, port=args.port), banner)
