#!/usr/bin/env bash
# Scans infra/ (Bicep) with checkov, offline. Exits non-zero when a check fails, a file does
# not parse, or nothing was scanned.
#
# checkov gets a venv of its own (.venv-infra, from requirements-infra.txt): its pins would
# clash with the app's. It must not reach the network: --skip-download stops the policy
# metadata download, BC_SKIP_MAPPING the mapping download, CKV_SKIP_PACKAGE_UPDATE_CHECK the
# PyPI version check; on top of that it runs under an audit hook that refuses any socket
# connection or name look-up that is not loopback (a call home added in a later checkov is
# refused instead of leaving the machine).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
VENV=.venv-infra
STAMP="$VENV/.installed-$(sha256sum requirements-infra.txt | cut -c1-16)"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -f "$STAMP" ]; then
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet -r requirements-infra.txt
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi

export BC_SKIP_MAPPING=TRUE
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true
export CKV_PARSE_ERROR_FAIL=true
export LOG_LEVEL=WARNING
unset BC_API_KEY PRISMA_API_URL BC_API_URL 2>/dev/null || true

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

set +e
"$VENV/bin/python" - "$OUT" <<'PY'
import ipaddress
import socket
import sys
import warnings

def _loopback(host):
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False

def _guard(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], (args[1] if len(args) > 1 else None)
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            if not _loopback(address[0]):
                raise ConnectionRefusedError(f"checkov.sh: refused network connection to {address!r}")
    elif event == "socket.getaddrinfo" and not _loopback(args[0]):
        raise ConnectionRefusedError(f"checkov.sh: refused name look-up of {args[0]!r}")

sys.addaudithook(_guard)
out_dir = sys.argv[1]
sys.argv = [
    "checkov", "--directory", "infra", "--framework", "bicep", "--skip-download",
    "--compact", "--output", "cli", "--output", "json", "--output-file-path", f"console,{out_dir}/results.json",
]
from checkov.main import Checkov  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", category=SyntaxWarning)
    sys.exit(Checkov().run())
PY
status=$?
set -e

"$VENV/bin/python" - "$OUT/results.json" "$status" <<'PY'
import json
import sys
from pathlib import Path

path, status = Path(sys.argv[1]), int(sys.argv[2])
if not path.exists():
    print(f"checkov: no report written (exit {status})")
    sys.exit(status or 1)
reports = json.loads(path.read_text())
reports = reports if isinstance(reports, list) else [reports]
totals = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0, "resource_count": 0}
for report in reports:
    for key in totals:
        totals[key] += int(report.get("summary", {}).get(key, 0))
    for check in report.get("results", {}).get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        print(f"  skipped {check['check_id']} on {check['resource']}: {reason[:110]}")
print("checkov summary: " + ", ".join(f"{k}={v}" for k, v in totals.items()))
problems = []
if totals["failed"]:
    problems.append(f"{totals['failed']} failed check(s)")
if totals["parsing_errors"]:
    problems.append(f"{totals['parsing_errors']} file(s) that do not parse")
if not totals["resource_count"] or not totals["passed"]:
    problems.append("nothing was scanned")
if problems or status:
    print("checkov: FAILED: " + ("; ".join(problems) or f"exit status {status}"))
    sys.exit(1)
print("checkov: OK")
PY
