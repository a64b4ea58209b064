"""Bearer-token authentication of the serving API: only the token's sha256 is ever kept."""

from __future__ import annotations

import hashlib
import hmac

TOKEN_ENV = "UCD_SERVE_TOKEN"
# Paths that answer without a token: probes must work for load balancers, docs carry no data.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenGuard:
    """Bearer-token check for every path outside :data:`OPEN_PATHS`."""

    def __init__(self, token_sha256: str | None = None) -> None:
        self.token_sha256 = token_sha256

    @property
    def enabled(self) -> bool:
        return self.token_sha256 is not None

    def rejects(self, path: str, authorization: str | None) -> str | None:
        """Why a request must be refused (401), or None when it may pass."""
        if not self.enabled or path.rstrip("/") in OPEN_PATHS or path in OPEN_PATHS:
            return None
        if not authorization:
            return "missing bearer token (header 'Authorization: Bearer <token>')"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "the Authorization header must read 'Bearer <token>'"
        # Constant-time comparison of the hashes, so timing tells nothing about the token.
        if not hmac.compare_digest(hash_token(token.strip()), self.token_sha256 or ""):
            return "invalid bearer token"
        return None
