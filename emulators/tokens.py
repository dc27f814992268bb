"""A local Entra ID token issuer: RS256 JWTs shaped like v1 access tokens.

The managed-identity endpoint and the ``az`` stand-in mint tokens here; the Azure OpenAI
emulator verifies them with the public key, and Azurite (which checks claims but not
signatures) accepts them for ``https://storage.azure.com``. They share a key by sharing a
state directory (``LOCAL_AZURE_DIR``, default ``.local-azure`` in the repo).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# Re-exported: most callers take a principal and the state directory from here, beside the issuer.
from emulators.principals import DEFAULT_TENANT as DEFAULT_TENANT
from emulators.principals import REPO_ROOT as REPO_ROOT
from emulators.principals import Principal as Principal
from emulators.principals import state_dir as state_dir

ISSUER_PREFIX = "https://sts.windows.net/"
KEY_FILE = "signing-key.pem"
KEY_ID = "local-azure-1"


def resource_from_scope(scope: str) -> str:
    """``https://x/.default`` -> ``https://x`` (what v1 tokens carry as ``aud``)."""
    return scope[: -len("/.default")] if scope.endswith("/.default") else scope


class TokenError(Exception):
    """A token failed verification; ``reason`` is one of audience, expired, signature, malformed."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class TokenIssuer:
    """Mints and verifies tokens with one RSA key kept in the state directory."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, tenant_id: str = DEFAULT_TENANT) -> None:
        self.directory = state_dir(directory)
        self.tenant_id = tenant_id
        self._private_pem = self._load_or_create_key()
        private = serialization.load_pem_private_key(self._private_pem, password=None)
        self.public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def issuer(self) -> str:
        return f"{ISSUER_PREFIX}{self.tenant_id}/"

    def _load_or_create_key(self) -> bytes:
        path = self.directory / KEY_FILE
        if path.exists():
            return path.read_bytes()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # Write-then-link so concurrent starters agree on one key: the first link wins.
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pem)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        return path.read_bytes()

    def mint(
        self, *, audience: str, principal: Principal, lifetime: int = 3600, now: float | None = None
    ) -> tuple[str, int]:
        """Return ``(jwt, expires_on)``; ``audience`` is a resource or a ``/.default`` scope."""
        issued = int(now if now is not None else time.time())
        expires_on = issued + lifetime
        claims = {
            "aud": resource_from_scope(audience),
            "iss": self.issuer,
            "tid": self.tenant_id,
            "iat": issued,
            "nbf": issued - 5,
            "exp": expires_on,
            "ver": "1.0",
            "uti": uuid.uuid4().hex,
            **principal.claims(),
        }
        token = jwt.encode(claims, self._private_pem, algorithm="RS256", headers={"kid": KEY_ID})
        return token, expires_on


def verify(token: str, public_pem: bytes, *, audience: str) -> dict[str, Any]:
    """Check signature, expiry and audience; raise TokenError saying which failed."""
    try:
        return jwt.decode(
            token,
            public_pem,
            algorithms=["RS256"],
            audience=resource_from_scope(audience),
            options={"require": ["exp", "nbf", "iat", "aud", "iss", "oid"]},
            leeway=0,
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("expired", "token has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("audience", "token audience is not " + resource_from_scope(audience)) from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("signature", "token signature does not verify") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("malformed", f"token is not a valid JWT: {exc}") from exc


def unverified_claims(token: str) -> dict[str, Any]:
    """Claims without verification, for diagnostics only (never for authorization)."""
    return jwt.decode(token, options={"verify_signature": False})
