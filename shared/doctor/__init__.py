"""``python -m shared doctor``: find what is wrong with a keyless setup, the way it actually breaks.

It reads the settings the worker reads (the environment, plus ``local.settings.json`` ``Values``
the way Core Tools applies them: a variable already in the environment wins) and runs the
checks below in order. Each returns a :class:`Check`: ok / fail / warn / skip, a stable
``reason`` code for scripts, what was seen, and a one-line fix; a check that needs an earlier one
that failed is skipped, saying why. docs/troubleshooting.md lists every reason.

- settings:       ``Settings.from_env`` accepts them; a deployment named like a Responses-only model but
                  declared chat is named with the setting to change (``environment``).
- credential:     which credential of ``DefaultAzureCredential``'s chain served a token, why
                  the ones before it did not (their own exceptions), and who the token is for
                  (``credential``).
- scope:          the token's ``aud`` is Azure OpenAI's audience (``credential``).
- openai:         each deployment probed through the API it declares (``probes``: a 1-token chat
                  completion, or a minimal stateless Responses call); a chat deployment Azure refuses
                  with ``OperationNotSupported`` is a Responses-only model declared chat; 401/403/404 and
                  connection errors are mapped to the setting, role or network (public access
                  off: private endpoints only) to fix (``--wait`` retries PermissionDenied while a
                  role assignment propagates) (``openai_probe``).
- storage:        which connection form is in use; keys, SAS, dev storage in Azure,
                  ``__credential`` set locally (``storage``).
- storage-access: send+delete a queue message, upload+read+delete a ``_doctor/<uuid>`` blob; a 403 names
                  the missing role, or the network when the account refuses it (``storage``).
- environment:    a container with no way to get a token, and what to do about it (``environment``).
- keys:           key or secret settings that the worker ignores and should not exist (``environment``).

``model`` holds what they share, ``runner`` runs them in order, ``render`` prints the report and
``command`` is the command line. Nothing here prints a token, a key or a secret: only setting
names and token claims that identify a principal (oid, appid/upn, tid, aud).
"""

from __future__ import annotations

from shared.doctor.command import register, run
from shared.doctor.model import Attempt, Check, CheckKind, Context, Options, Status
from shared.doctor.render import exit_code, render_json, render_table
from shared.doctor.runner import CHECKS, diagnose, run_doctor

__all__ = [
    "CHECKS",
    "Attempt",
    "Check",
    "CheckKind",
    "Context",
    "Options",
    "Status",
    "diagnose",
    "exit_code",
    "register",
    "render_json",
    "render_table",
    "run",
    "run_doctor",
]
