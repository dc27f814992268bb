"""Who a local token speaks for and where the stand-ins keep their state: the tenant, principals and the state
directory. Apart from emulators/tokens.py so that a caller needing no signing (the ``az`` stand-in, started once a
command) does not import jwt and cryptography (about 70 ms a process)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TENANT = "7f2c5e0a-0000-4000-8000-00000000a2e1"
REPO_ROOT = Path(__file__).resolve().parent.parent


def state_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The directory shared by all stand-ins of one local Azure (created if missing)."""
    chosen = Path(path or os.environ.get("LOCAL_AZURE_DIR") or REPO_ROOT / ".local-azure")
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


@dataclass(frozen=True)
class Principal:
    """Who a token represents. ``kind`` is ``app`` (managed identity / service principal) or ``user``."""

    object_id: str
    name: str
    kind: str = "app"
    app_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def claims(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"oid": self.object_id, "sub": self.object_id, "idtyp": self.kind}
        if self.kind == "user":
            extra.update(upn=self.name, name=self.name, appid="04b07795-8ddb-461a-bbee-02f9e1bf7b46")
        else:
            extra.update(appid=self.app_id, app_displayname=self.name)
        return extra
